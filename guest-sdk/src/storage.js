// `storage`: buckets of objects, with the supabase-js storage API.
//
//   const b = storage.from('avatars');
//   await b.upload('u/42.png', request.body, { contentType: 'image/png', upsert: true });
//   const { data } = await b.list('u/', { limit: 100 });
//
// Replies are `{ data, error }`; errors are values, storage-js's `StorageApiError`
// (`error.message`, `error.statusCode`, `error.status`, `error.error`; `isStorageError(error)`). Uploading the request's
// own body pipes it from the socket into storage on the host: it never enters
// the sandbox.
import {
  call, uploadBegin, uploadWrite, uploadFinish, uploadRequest, downloadBegin, downloadRead,
} from 'fazt:host/storage@0.1.0';
import { bodyDisturbed, claimRequestBody, hostResponse, mountPrefix, readAll, requestOrigin, wordChunks } from './runtime.js';

const READ_CHUNK = 16 << 20;

// storage-js's error classes, so `error instanceof StorageError` and `isStorageError(error)` hold.
export class StorageError extends Error {
  constructor(message) {
    super(message);
    this.name = 'StorageError';
    this.__isStorageError = true;
  }
}

export class StorageApiError extends StorageError {
  constructor(message, status, statusCode, error) {
    super(message);
    this.name = 'StorageApiError';
    this.status = status;
    this.statusCode = statusCode;
    this.error = error;
  }

  toJSON() {
    return { name: this.name, message: this.message, status: this.status, statusCode: this.statusCode, error: this.error };
  }
}

export function isStorageError(error) {
  return typeof error === 'object' && error !== null && '__isStorageError' in error;
}

// A host reply (`{data, error}` JSON), its error as a StorageApiError.
function parseReply(text) {
  const r = JSON.parse(text);
  if (r.error) r.error = new StorageApiError(r.error.message, r.error.status, r.error.statusCode, r.error.error);
  return r;
}

function ask(fn, op) {
  return parseReply(fn(JSON.stringify(op)));
}

function failed(message, statusCode = '400', error = 'InvalidRequest') {
  return { data: null, error: new StorageApiError(message, Number(statusCode), statusCode, error) };
}

async function toBytes(body) {
  if (body === null || body === undefined) return new Uint8Array(0); // as fetch sends it: an empty object
  if (typeof body === 'string') return new TextEncoder().encode(body);
  if (body instanceof Uint8Array) return body;
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (body instanceof Blob) return new Uint8Array(await body.arrayBuffer());
  if (body instanceof URLSearchParams) return new TextEncoder().encode(body.toString()); // as fetch sends it
  if (body instanceof Request) return new Uint8Array(await body.arrayBuffer()); // one with no body to pipe
  return null;
}

const iso = (seconds) => new Date(seconds * 1000).toISOString();

function entry(o, prefix) {
  // The storage-js list shape: names relative to the listed folder, metadata with size and type.
  return {
    name: o.key.slice(prefix.length),
    id: o.id,
    updated_at: iso(o.updatedAt),
    created_at: iso(o.createdAt),
    last_accessed_at: null,
    // The app's own metadata beside the object's, which it cannot overwrite (a `size` of its own, say).
    metadata: {
      ...o.metadata, size: o.size, mimetype: o.contentType, eTag: `"${o.etag}"`, cacheControl: o.cacheControl,
      lastModified: iso(o.updatedAt),
    },
    user_metadata: o.metadata,
  };
}

// A key in a URL path: each segment escaped ('?', '#', '%'...), the '/' between them kept.
function encodeKey(path) {
  return path.split('/').map(encodeURIComponent).join('/');
}

function downloadQuery(download, sep) {
  if (!download) return '';
  return `${sep}download=${download === true ? '' : encodeURIComponent(download)}`;
}

// storage-js's own clean-ups of a path, so that a ported app finds its objects
// where Supabase keeps them: an upload drops leading, trailing and repeated
// slashes ('/u//a.png/' is 'u/a.png'); reads and signed URLs drop leading ones.
function uploadPath(path) {
  return typeof path === 'string' ? path.replace(/^\/+|\/+$/g, '').replace(/\/+/g, '/') : path;
}

function readPath(path) {
  return typeof path === 'string' ? path.replace(/^\/+/, '') : path;
}

// A count as Supabase's storage server reads it (expiresIn, limit, offset): a number, or a string of one ('60').
function numeric(value) {
  return typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value)) ? Number(value) : value;
}

// upsert as storage-js sends it (an `x-upsert` header) and the server reads it: true or 'true'.
const upserts = (upsert) => upsert === true || upsert === 'true';

function folderPrefix(path) {
  return !path ? '' : path.endsWith('/') ? path : `${path}/`;
}

const NOT_A_PATH = 'path must be a string';

function signedUrl(bucket, path, expiresIn, options) {
  const { download } = options ?? {};
  path = readPath(path);
  const r = ask(call, { op: 'sign', bucket, key: path, expiresIn: numeric(expiresIn) });
  return r.error ? r : { data: { signedUrl: requestOrigin() + r.data.signedUrl + downloadQuery(download, '&') }, error: null };
}

// storage-js's throwOnError(): a reply's error is thrown instead of returned.
function thrown(client, r) {
  if (client?.throws && r.error) throw r.error;
  return r;
}

class Bucket {
  constructor(bucket) {
    this.bucket = bucket;
    this.throws = false;
  }

  throwOnError() {
    this.throws = true;
    return this;
  }

  // body: string, bytes, Blob, URLSearchParams, FormData (its first file), a ReadableStream of bytes, or the
  // request (or request.body) to pipe it, as its Content-Type unless contentType says otherwise.
  // cacheControl: seconds, served as `Cache-Control: max-age=N` (storage-js's default, 3600).
  async upload(path, body, options) {
    const { contentType, upsert = false, metadata = {}, cacheControl = '3600', token } = options ?? {};
    path = uploadPath(path);
    const op = { bucket: this.bucket, key: path, upsert: upserts(upsert), metadata, cacheControl: String(cacheControl) };
    if (contentType) op.contentType = contentType;
    if (token !== undefined) op.token = String(token);
    if (bodyDisturbed(body)) {
      return failed('the body was already read (text(), json(), arrayBuffer() or a reader), or the response has gone: upload the bytes '
        + 'read, or the request before reading it');
    }
    const piped = claimRequestBody(body);
    if (piped) {
      op.contentType ||= piped.headers.get('content-type') || undefined;
      return this.reply(ask(uploadRequest, op), path);
    }
    if (body instanceof FormData) {
      // Supabase's storage server stores the form's first file, as its type.
      body = [...body.values()].find((value) => value instanceof Blob);
      if (!body) return failed('a FormData body needs a file in it');
    }
    let stream = null;
    let bytes = await toBytes(body);
    if (bytes === null) {
      if (body instanceof ReadableStream) stream = body;
      else return failed('upload takes a string, bytes, a Blob, URLSearchParams, FormData, a ReadableStream or the request body');
    }
    if (!op.contentType) {
      op.contentType = (body instanceof Blob && body.type) || (body instanceof Request && body.headers.get('content-type'))
        || 'text/plain;charset=UTF-8';
    }
    const begun = ask(uploadBegin, op);
    if (begun.error) return begun;
    const handle = begun.data.handle;
    const write = (u8) => {
      for (const [words, n] of wordChunks(u8)) {
        const err = uploadWrite(handle, words, n);
        if (err) return parseReply(err);
      }
      return null;
    };
    if (stream) {
      const reader = stream.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        const err = write((await toBytes(value)) ?? new TextEncoder().encode(String(value)));
        if (err) { reader.cancel(); return err; }
      }
    } else {
      const err = write(bytes);
      if (err) return err;
    }
    return this.reply(parseReply(uploadFinish(handle)), path);
  }

  reply(r, path) {
    if (r.error) return r;
    return { data: { path, id: r.data.id, fullPath: `${this.bucket}/${path}` }, error: null };
  }

  // storage-js's: an upload through a token from createSignedUploadUrl (on this app, bucket and path). As on
  // Supabase, the token alone decides whether an existing object may be replaced: `upsert` is ignored.
  uploadToSignedUrl(path, token, body, options) {
    return this.upload(path, body, { ...options, upsert: false, token });
  }

  update(path, body, options) {
    return this.upload(path, body, { ...options, upsert: true });
  }

  async download(path) {
    path = readPath(path);
    const begun = ask(downloadBegin, { bucket: this.bucket, key: path });
    if (begun.error) return begun;
    const bytes = readAll(() => downloadRead(begun.data.handle, READ_CHUNK), begun.data.size);
    return { data: new Blob([bytes], { type: begun.data.contentType }), error: null };
  }

  // Lists one "folder": objects directly under `path` and its subfolders (as
  // entries with id null), like storage-js. `offset` skips that many entries;
  // `cursor` continues a listing by name (ascending, without search) that replied with `cursor`.
  // `search` keeps the entries whose name starts with it, ignoring case; `sortBy` orders the objects
  // (subfolders come first, by name).
  async list(path = '', options) {
    const { limit = 100, offset = 0, cursor, search = '', sortBy } = options ?? {};
    if (path !== null && typeof path !== 'string') return failed(NOT_A_PATH);
    const prefix = folderPrefix(path);
    const { column = 'name', order = 'asc' } = sortBy ?? {};
    const r = ask(call, {
      op: 'list', bucket: this.bucket, prefix, limit: numeric(limit), offset: numeric(offset), start: cursor ?? '',
      search, sortColumn: column, sortOrder: order,
    });
    if (r.error) return r;
    const folders = r.data.prefixes.map((p) => ({
      name: p.slice(prefix.length, -1), id: null, updated_at: null, created_at: null, last_accessed_at: null, metadata: null,
    }));
    const out = { data: [...folders, ...r.data.objects.map((o) => entry(o, prefix))], error: null };
    if (r.data.next) out.cursor = r.data.next;
    return out;
  }

  async head(path) {
    path = readPath(path);
    const r = ask(call, { op: 'head', bucket: this.bucket, key: path });
    return r.error ? r : { data: r.data, error: null };
  }

  // storage-js's info(): camelCase fields, ISO 8601 times, `name` the whole key (head() has epoch seconds).
  async info(path) {
    const r = await this.head(path);
    if (r.error) return r;
    const o = r.data;
    return {
      data: {
        id: o.id, name: o.key, bucketId: o.bucket, size: o.size, contentType: o.contentType,
        etag: `"${o.etag}"`, metadata: o.metadata, cacheControl: o.cacheControl,
        createdAt: iso(o.createdAt), lastModified: iso(o.updatedAt),
      },
      error: null,
    };
  }

  // As storage-js: a missing object is `data: false` with the not-found error beside it.
  async exists(path) {
    const r = await this.head(path);
    if (r.error && r.error.statusCode === '404') return { data: false, error: r.error };
    return r.error ? r : { data: true, error: null };
  }

  async remove(paths) {
    const r = ask(call, { op: 'remove', bucket: this.bucket, keys: Array.isArray(paths) ? paths.map(readPath) : paths });
    return r.error ? r : { data: r.data.map((o) => entry(o, '')), error: null };
  }

  // An existing destination is refused with Duplicate unless `upsert: true`.
  async copy(from, to, options) {
    const { destinationBucket, upsert = false } = options ?? {};
    [from, to] = [readPath(from), uploadPath(to)];
    const r = ask(call, { op: 'copy', bucket: this.bucket, key: from, to, toBucket: destinationBucket ?? '', upsert: upserts(upsert) });
    // storage-js gives the server's Key: the destination with its bucket.
    return r.error ? r : { data: { path: `${destinationBucket ?? this.bucket}/${to}` }, error: null };
  }

  // A Response the host fills from storage (ETag, Last-Modified, conditional
  // GET, Range): the bytes go from the cartridge to the client, not through
  // the sandbox. `range` is a Range header value; without the option the
  // request's own Range header applies. The object is looked up when the
  // response is sent: a missing one gives 404.
  stream(path, options) {
    const { range, status = 200, headers } = options ?? {};
    path = readPath(path);
    const object = { bucket: this.bucket, key: path };
    if (options && 'range' in options) object.range = range ?? null;
    return hostResponse({ object }, { status, headers });
  }

  // `download`: true, or a file name, makes the URL serve the object as an attachment (as storage-js).
  async createSignedUrl(path, expiresIn, options) {
    return signedUrl(this.bucket, path, expiresIn, options);
  }

  // storage-js's shape: one entry per path, a missing object or a bad path as that entry's `error`
  // (a message); a bad expiresIn fails the call.
  async createSignedUrls(paths, expiresIn, options) {
    if (!Array.isArray(paths)) return failed('paths must be an array of paths');
    const data = [];
    for (const path of paths) {
      const r = signedUrl(this.bucket, path, expiresIn, options);
      if (r.error && /^expiresIn/.test(r.error.message)) return r;
      data.push({ error: r.error ? r.error.message : null, path, signedUrl: r.data ? r.data.signedUrl : null });
    }
    return { data, error: null };
  }

  // `upsert: true` (storage-js's option) lets the URL replace an existing object.
  async createSignedUploadUrl(path, options) {
    const { expiresIn = 7200, upsert = false } = options ?? {};
    path = readPath(path);
    const r = ask(call, {
      op: 'sign', bucket: this.bucket, key: path, expiresIn: numeric(expiresIn), upload: true, upsert: upserts(upsert),
    });
    return r.error ? r : { data: { ...r.data, signedUrl: requestOrigin() + r.data.signedUrl }, error: null };
  }

  // The URL of an object in a public bucket (fazt.json storage.buckets.NAME.public).
  getPublicUrl(path, options) {
    const { download } = options ?? {};
    path = readPath(path);
    const url = `${requestOrigin()}${mountPrefix()}/storage/v1/object/public/${this.bucket}/${encodeKey(path)}`;
    return { data: { publicUrl: url + downloadQuery(download, '?') } };
  }

  // An existing destination is refused with Duplicate unless `upsert: true`.
  async move(from, to, options) {
    const { destinationBucket, upsert = false } = options ?? {};
    [from, to] = [readPath(from), uploadPath(to)];
    const r = ask(call, { op: 'move', bucket: this.bucket, key: from, to, toBucket: destinationBucket ?? '', upsert: upserts(upsert) });
    return r.error ? r : { data: { message: 'Successfully moved' }, error: null };
  }
}

for (const name of ['upload', 'uploadToSignedUrl', 'update', 'download', 'list', 'head', 'info', 'exists', 'remove',
  'copy', 'createSignedUrl', 'createSignedUrls', 'createSignedUploadUrl', 'move']) {
  const method = Bucket.prototype[name];
  Bucket.prototype[name] = async function (...args) {
    return thrown(this, await method.apply(this, args));
  };
}

// storage-js's Bucket shape (times ISO 8601; limits null when unset).
function bucketEntry(b) {
  return {
    id: b.name, name: b.name, public: b.public, file_size_limit: b.fileSizeLimit,
    allowed_mime_types: b.allowedMimeTypes, created_at: iso(b.createdAt), updated_at: iso(b.updatedAt),
  };
}

function bucketCall(client, op, id, data, settings = {}) {
  const r = ask(call, { op, bucket: id, ...settings });
  return thrown(client, r.error ? r : { data: data(r.data), error: null });
}

// The settings storage-js sends: undefined ones are left out (as they are when it sends them).
function bucketSettings(options) {
  const { public: isPublic, fileSizeLimit, allowedMimeTypes } = options ?? {};
  return { public: isPublic, fileSizeLimit, allowedMimeTypes };
}

export const storage = {
  throws: false,
  // The bucket calls of what it returns throw their errors; `storage` itself, shared by the app's modules, is left as it is.
  throwOnError() { return Object.assign(Object.create(this), { throws: true }); },
  from(bucket) { return new Bucket(bucket); },
  async listBuckets() { return bucketCall(this, 'listBuckets', '', (list) => list.map(bucketEntry)); },
  async getBucket(id) { return bucketCall(this, 'getBucket', id, bucketEntry); },
  // Refused with BucketAlreadyExists (409) if it exists. Uploads to a bucket that does not exist create it.
  async createBucket(id, options) {
    return bucketCall(this, 'createBucket', id, () => ({ name: id }), bucketSettings(options ?? { public: false }));
  },
  async updateBucket(id, options) {
    return bucketCall(this, 'updateBucket', id, () => ({ message: 'Successfully updated' }), bucketSettings(options));
  },
  // Refused with ResourceNotEmpty (409) while the bucket holds objects: emptyBucket first.
  async deleteBucket(id) { return bucketCall(this, 'deleteBucket', id, () => ({ message: 'Successfully deleted' })); },
  async emptyBucket(id) { return bucketCall(this, 'emptyBucket', id, () => ({ message: 'Successfully emptied' })); },
};
