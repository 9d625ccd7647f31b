// The `fazt` package apps import. Capabilities (db, storage, auth, ai) join
// here as the host grows them.
export { requestId } from './runtime.js';
