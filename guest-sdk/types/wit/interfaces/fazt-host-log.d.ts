/** @module Interface fazt:host/log@0.1.0 **/
/**
 * Appends one line to the app's log (`fazt-host logs APP`).
 */
export function write(level: Level, message: string): void;
/**
 * # Variants
 * 
 * ## `"debug"`
 * 
 * ## `"info"`
 * 
 * ## `"warn"`
 * 
 * ## `"error"`
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';
