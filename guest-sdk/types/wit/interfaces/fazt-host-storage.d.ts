/** @module Interface fazt:host/storage@0.1.0 **/
/**
 * Metadata operations: JSON `{"op": "head"|"list"|"remove"|"copy"|"move"|"sign"|"listBuckets"|
 * "getBucket"|"createBucket"|"updateBucket"|"deleteBucket"|"emptyBucket", "bucket",
 * "key", "keys", "to", "toBucket", "prefix", "delimiter", "limit", "offset", "start", "search",
 * "sortColumn", "sortOrder",
 * "public", "fileSizeLimit", "allowedMimeTypes"}`.
 */
export function call(operation: string): string;
/**
 * Starts an upload: JSON `{"bucket", "key", "contentType", "metadata", "upsert", "cacheControl"}`
 * (`cacheControl` in seconds, served as `max-age`);
 * replies `{"data": {"handle"}}`. Nothing is visible until `upload-finish`.
 */
export function uploadBegin(operation: string): string;
/**
 * Appends `len` bytes packed eight to a word; "" or an error reply (the upload is then gone).
 */
export function uploadWrite(handle: number, words: BigUint64Array, len: number): string;
/**
 * Commits the upload as the object (replacing it when `upsert`); replies its description.
 */
export function uploadFinish(handle: number): string;
/**
 * Uploads the current request's unread body, piped by the host: it never enters the sandbox.
 */
export function uploadRequest(operation: string): string;
/**
 * Opens an object for reading: replies its description with a `handle`.
 */
export function downloadBegin(operation: string): string;
/**
 * Reads the next bytes of a download, at most `max`, base64; "" at the end.
 */
export function downloadRead(handle: number, max: number): string;
