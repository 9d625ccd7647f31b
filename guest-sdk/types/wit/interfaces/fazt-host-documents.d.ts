/** @module Interface fazt:host/documents@0.1.0 **/
/**
 * Runs one operation of the query builder. `operation` is JSON:
 * `{"op": "select"|"insert"|"update"|"upsert"|"delete"|"batch", "collection",
 * "columns", "where", "order", "limit", "offset", "after", "count", "head",
 * "single", "returning", "values", "onConflict", "ignoreDuplicates", "ops"}`.
 * Returns JSON `{"data", "error": null | {"message", "code", "details", "hint"},
 * "count", "status", "statusText", "cursor"}`: errors are values, not traps.
 */
export function query(operation: string): string;
