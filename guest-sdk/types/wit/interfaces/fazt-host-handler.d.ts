/** @module Interface fazt:host/handler@0.1.0 **/
/**
 * Handles one HTTP request. `request` is JSON
 * `{"method", "url", "headers": [[name, value], ...], "requestId", "hasBody", "app"}`.
 * Returns JSON: a small complete response inline,
 * `{"status", "headers", "body": base64}`; or `{"sent": true}` once the
 * response went out through `http.send-head`/`http.send-body` (large or
 * streamed bodies); or `{"error", "stack"}` when the handler threw.
 */
export function fetch(request: string): string;
/**
 * Runs one cron entry of fazt.json. `event` is JSON
 * `{"name", "scheduledTime", "attempt", "lastRun", "schedule", "timezone",
 * "manual", "requestId", "app", "env"}`; `scheduledTime` (ISO 8601 UTC) is
 * the slot, the run's idempotency key. Returns `{}`, or `{"error", "stack"}`
 * when the handler threw.
 */
export function scheduled(event: string): string;
