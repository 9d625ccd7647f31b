/** @module Interface fazt:host/http@0.1.0 **/
/**
 * Reads the next piece of the request body, at most `max` bytes, base64
 * encoded; an empty string once the body is exhausted.
 */
export function readBody(max: number): string;
/**
 * Starts the response: JSON `{"status": 200, "headers": [["name", "value"], ...]}`,
 * with `"length"` (the body's size) when the whole body is known: a body over
 * the response limit is then refused before any of it goes out.
 * Called once, before any body chunk.
 */
export function sendHead(head: string): void;
/**
 * Sends a chunk of the response body: `len` bytes packed little endian,
 * eight to a word, the last word zero-padded.
 */
export function sendBody(words: BigUint64Array, len: number): void;
/**
 * Ends the response: it goes to the client now, while the invocation goes
 * on (the handler's `ctx.waitUntil` promises). Nothing can be sent after it.
 */
export function finish(): void;
