// The `fazt` package apps import. Capabilities (auth, ai) join here as the
// host grows them.
export { requestId } from './runtime.js';
export { db, DocumentsError } from './db.js';
export { storage, StorageError, StorageApiError, isStorageError } from './storage.js';
