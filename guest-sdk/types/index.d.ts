// The `fazt` module as apps see it. The host interfaces underneath are in
// ./wit/, generated from ../../wit/fazt.wit by `npm run types`.

/** What the host passes a handler besides the request. */
export interface Context {
  /** This invocation's id: in the `x-fazt-request-id` response header and in `fazt-host logs`. */
  readonly requestId: string;
  /** The app's name (from fazt.json). */
  readonly app: string;
  /** The `env` strings of fazt.json. */
  readonly env: Readonly<Record<string, string>>;
  /** Keeps the invocation alive until `promise` settles (after the response is built). */
  waitUntil(promise: Promise<unknown>): void;
  passThroughOnException(): void;
}

/** The default export of an app's entry module. */
export interface App {
  /**
   * Handles one HTTP request under /<app>/ (or <app>.<domain>). `request.url` is the
   * path inside the app; the prefix it was mounted at is in the `x-forwarded-prefix` header.
   */
  fetch?(request: Request, ctx: Context): Response | Promise<Response>;
  /** Runs the cron entries of fazt.json that have no `file` (`event.name` tells them apart). */
  scheduled?: ScheduledHandler;
}

/** The previous finished run of a cron entry. */
export interface LastRun {
  readonly scheduledTime: string;
  readonly attempt: number;
  readonly status: 'ok' | 'failed' | 'timeout';
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
}

/** What a cron entry's handler receives. */
export interface ScheduledEvent {
  /** The entry's name in fazt.json. */
  readonly name: string;
  /** The slot, ISO 8601 UTC: the same for every attempt at it, so use it as the idempotency key. */
  readonly scheduledTime: string;
  /** 1 for the first try, 2 for the first retry, ... */
  readonly attempt: number;
  readonly lastRun: LastRun | null;
  readonly schedule: string;
  readonly timezone: string;
  /** True for `fazt-host cron run`. */
  readonly manual: boolean;
}

/** What a cron handler gets besides the event. */
export interface ScheduledContext {
  readonly requestId: string;
  readonly app: string;
  readonly env: Readonly<Record<string, string>>;
  /** Keeps the run alive until `promise` settles; a rejection fails the run. */
  waitUntil(promise: Promise<unknown>): void;
}

/** The default export of a cron file (or the app's `scheduled`); throwing fails the run (retried per `retries`). */
export type ScheduledHandler = (event: ScheduledEvent, ctx: ScheduledContext) => void | Promise<void>;

/** The id of the invocation in progress. */
export function requestId(): string;

/** A document as stored: the app's fields plus the ones the host maintains. */
export type Document = Record<string, unknown> & { id: string | number; createdAt: string; updatedAt: string };

/** An error from the document store (`error` of a reply; thrown after `throwOnError()`). */
export interface DocumentsErrorShape {
  message: string;
  /** PostgreSQL/PostgREST style code, e.g. `23505` (unique), `PGRST116` (single), `57014` (query time). */
  code: string;
  details: string | null;
  hint: string | null;
}

export class DocumentsError extends Error implements DocumentsErrorShape {
  code: string;
  details: string | null;
  hint: string | null;
}

/** What awaiting a builder gives (the supabase-js v2 shape). */
export interface Reply<T> {
  data: T | null;
  error: DocumentsErrorShape | null;
  /** Set when `count: 'exact' | 'estimated'` was asked. */
  count: number | null;
  status: number;
  statusText: string;
  /** After a page of `limit` rows: pass it to `.after()` for the next page. */
  cursor?: string;
}

type Scalar = string | number | boolean;
type Operator =
  | 'eq' | 'neq' | 'gt' | 'gte' | 'lt' | 'lte' | 'in' | 'like' | 'ilike' | 'is' | 'isdistinct'
  | 'contains' | 'cs' | 'containedBy' | 'cd' | 'overlaps' | 'ov';

export interface QueryBuilder<T = Document> extends PromiseLike<Reply<T[]>> {
  select(columns?: string, options?: { count?: 'exact' | 'estimated' | 'planned'; head?: boolean }): QueryBuilder<T>;
  insert(values: Partial<T> | Partial<T>[], options?: { count?: 'exact' }): QueryBuilder<T>;
  /** A JSON merge patch (RFC 7396) applied to every matching document. Needs a filter. */
  update(values: Partial<T>, options?: { count?: 'exact' }): QueryBuilder<T>;
  /**
   * Insert, or merge the given fields into the document with the same `onConflict` key: `id` (the
   * default), or fields with a unique index (`'email'`, `'org,email'`).
   */
  upsert(
    values: Partial<T> | Partial<T>[],
    options?: { onConflict?: string; ignoreDuplicates?: boolean; count?: 'exact' },
  ): QueryBuilder<T>;
  /** Deletes every matching document. Needs a filter. */
  delete(options?: { count?: 'exact' }): QueryBuilder<T>;

  eq(field: string, value: Scalar): QueryBuilder<T>;
  neq(field: string, value: Scalar): QueryBuilder<T>;
  gt(field: string, value: Scalar): QueryBuilder<T>;
  gte(field: string, value: Scalar): QueryBuilder<T>;
  lt(field: string, value: Scalar): QueryBuilder<T>;
  lte(field: string, value: Scalar): QueryBuilder<T>;
  in(field: string, values: Scalar[] | string): QueryBuilder<T>;
  /** `%` (or `*`) matches any run, `_` one character, `\` escapes the next (`\*` is a `*`); case-sensitive. */
  like(field: string, pattern: string): QueryBuilder<T>;
  /** like, ignoring case (beyond ASCII too: both sides lowercased, as PostgreSQL does). */
  ilike(field: string, pattern: string): QueryBuilder<T>;
  /** Matches any of the patterns (none: no row); likeAllOf every one (none: every row). */
  likeAnyOf(field: string, patterns: string[]): QueryBuilder<T>;
  likeAllOf(field: string, patterns: string[]): QueryBuilder<T>;
  ilikeAnyOf(field: string, patterns: string[]): QueryBuilder<T>;
  ilikeAllOf(field: string, patterns: string[]): QueryBuilder<T>;
  is(field: string, value: null | boolean): QueryBuilder<T>;
  /** SQL's IS DISTINCT FROM: not equal, a missing or null field counting as null (also `isdistinct` in filter strings). */
  isDistinct(field: string, value: Scalar | null): QueryBuilder<T>;
  /** Array field holds every element (an object or array element: contained in some element), or object field matches every key. */
  contains(field: string, value: unknown[] | Record<string, unknown> | string): QueryBuilder<T>;
  /** jsonb's <@: an array field whose every element is in `value` (or a scalar field in it), or an object field whose every key matches. */
  containedBy(field: string, value: Scalar[] | Record<string, unknown> | string): QueryBuilder<T>;
  /** An array field holding at least one of the values. */
  overlaps(field: string, value: Scalar[] | string): QueryBuilder<T>;
  match(query: Record<string, Scalar>): QueryBuilder<T>;
  /** A string value is in PostgREST's syntax, as in or(): `'4'` is the number 4, `'"4"'` the text. */
  not(field: string, operator: Operator, value: unknown): QueryBuilder<T>;
  /** As not() for a string value; `operator` may be `not.eq` and the like. */
  filter(field: string, operator: Operator | `not.${Operator}`, value: unknown): QueryBuilder<T>;
  /** PostgREST syntax: `'status.eq.open,and(n.gt.2,n.lt.5)'`. */
  or(filters: string): QueryBuilder<T>;

  order(field: string, options?: { ascending?: boolean; nullsFirst?: boolean }): QueryBuilder<T>;
  limit(count: number): QueryBuilder<T>;
  range(from: number, to: number): QueryBuilder<T>;
  /** Keyset pagination: the previous reply's `cursor`, or the previous page's last row. */
  after(cursor: string | { id: string | number }): QueryBuilder<T>;
  /** Exactly one row as `data` (an error `PGRST116` otherwise). */
  single(): SingleBuilder<T>;
  /** One row or `data: null`. */
  maybeSingle(): SingleBuilder<T>;
  throwOnError(): QueryBuilder<T>;
  /** Casts the rows' type (supabase-js's); nothing changes at run time. */
  returns<U>(): QueryBuilder<U>;
  overrideTypes<U>(): QueryBuilder<U>;
}

export interface SingleBuilder<T> extends PromiseLike<Reply<T>> {
  throwOnError(): SingleBuilder<T>;
  returns<U>(): SingleBuilder<U>;
  overrideTypes<U>(): SingleBuilder<U>;
}

export const db: {
  from<T = Document>(collection: string): QueryBuilder<T>;
  /** Runs the builders in one transaction: every one commits, or none does. */
  batch(builders: QueryBuilder<any>[]): Promise<Reply<Reply<unknown>[]>>;
};

/** An error from storage (`error` of a reply): the storage-js shape. */
export interface StorageErrorShape {
  message: string;
  /** HTTP status as a string, e.g. `'404'`, `'409'` (exists), `'413'` (quota or body limit). */
  statusCode: string;
  /** The same status as a number, e.g. `404`. */
  status: number;
  /** A code: `not_found`, `Duplicate`, `InvalidKey`, `InvalidBucketName`, `NoSuchBucket`, `QuotaExceeded`, `EntityTooLarge`, `InvalidMimeType`, ... */
  error: string;
}

/** storage-js's base error class: `isStorageError(e)` tells storage errors from others. */
export class StorageError extends Error {
  readonly __isStorageError: true;
}

/** The class of every `error` in a storage reply. */
export class StorageApiError extends StorageError implements StorageErrorShape {
  statusCode: string;
  status: number;
  error: string;
  toJSON(): { name: string } & StorageErrorShape;
}

export function isStorageError(error: unknown): error is StorageError;

export interface StorageReply<T> {
  data: T | null;
  error: StorageApiError | null;
}

/** A listed object (or a folder, with `id: null`), as storage-js lists them. */
export interface FileObject {
  name: string;
  id: string | null;
  updated_at: string | null;
  created_at: string | null;
  last_accessed_at: null;
  /** The object's fields, over the app's own metadata. */
  metadata: { size: number; mimetype: string; eTag: string; cacheControl: string | null; lastModified: string; [key: string]: unknown } | null;
  /** The app's own metadata, whole (absent on folders). */
  user_metadata?: Record<string, string>;
}

export interface ObjectInfo {
  bucket: string;
  key: string;
  /** This stored version's id, a UUID (a new one for every upload or copy; a move keeps it). */
  id: string;
  size: number;
  /** MD5 of the bytes, hex. */
  etag: string;
  contentType: string;
  metadata: Record<string, string>;
  /** The Cache-Control header it is served with, e.g. `max-age=3600`. */
  cacheControl: string | null;
  /** The other representation headers it is served with (content-disposition, content-encoding, ...). */
  headers: Record<string, string>;
  /** Seconds since the epoch. */
  createdAt: number;
  updatedAt: number;
}

/** What info() gives: storage-js's shape. */
export interface FileInfo {
  /** This stored version's id, a UUID (a new one for every upload or copy; a move keeps it). */
  id: string;
  /** The whole key. */
  name: string;
  bucketId: string;
  size: number;
  contentType: string;
  /** The MD5 in quotes, as the ETag header has it. */
  etag: string;
  metadata: Record<string, string>;
  cacheControl: string | null;
  /** ISO 8601. */
  createdAt: string;
  lastModified: string;
}

export interface Bucket {
  /** The calls of this bucket throw their errors instead of returning them (storage-js's). */
  throwOnError(): this;
  /**
   * Stores an object. Passing the request (or `request.body`, unread) pipes it from the socket into
   * storage on the host: the bytes never enter the sandbox; its type is the request's Content-Type unless
   * `contentType` is given. A body already read is refused. Refused with `Duplicate` if the key
   * exists, unless `upsert`.
   */
  upload(
    path: string,
    /** null or undefined (`request.body` of an empty request): an empty object. FormData: its first file. */
    body: string | ArrayBuffer | ArrayBufferView | Blob | URLSearchParams | FormData | ReadableStream | Request | null | undefined,
    options?: {
      contentType?: string; upsert?: boolean | 'true' | 'false'; metadata?: Record<string, string>;
      /** Seconds; the object is served with `Cache-Control: max-age=<seconds>`. Default `'3600'`. */
      cacheControl?: string | number;
    },
  ): Promise<StorageReply<{ path: string; id: string; fullPath: string }>>;
  update(path: string, body: Parameters<Bucket['upload']>[1], options?: { contentType?: string }): ReturnType<Bucket['upload']>;
  download(path: string): Promise<StorageReply<Blob>>;
  /** A Response the host fills from storage (ETag, Last-Modified, 304, Range): the bytes skip the sandbox. */
  stream(path: string, options?: { range?: string | null; status?: number; headers?: HeadersInit }): Response;
  /**
   * One folder: its subfolders, then the objects directly under `path`; `offset` skips that many entries.
   * `search`: names starting with it, ignoring ASCII case. `cursor` pages the default order (name, ascending) only.
   */
  list(
    path?: string,
    options?: {
      limit?: number; offset?: number; cursor?: string; search?: string;
      sortBy?: { column?: 'name' | 'created_at' | 'updated_at' | 'last_accessed_at'; order?: 'asc' | 'desc' };
    },
  ): Promise<StorageReply<FileObject[]> & { cursor?: string }>;
  head(path: string): Promise<StorageReply<ObjectInfo>>;
  info(path: string): Promise<StorageReply<FileInfo>>;
  /** `data: false` with the not-found error beside it for a missing object, as storage-js. */
  exists(path: string): Promise<{ data: boolean; error: StorageApiError | null }>;
  remove(paths: string[]): Promise<StorageReply<FileObject[]>>;
  /** Refuses an existing destination with `Duplicate` (409) unless `upsert: true`, which replaces it. */
  copy(from: string, to: string, options?: { destinationBucket?: string; upsert?: boolean }): Promise<StorageReply<{ path: string }>>;
  /** Refuses an existing destination with `Duplicate` (409) unless `upsert: true`, which replaces it. */
  move(from: string, to: string, options?: { destinationBucket?: string; upsert?: boolean }): Promise<StorageReply<{ message: string }>>;
  /** A URL (absolute path on this host) that GETs the object without the app until it expires. */
  createSignedUrl(path: string, expiresIn: number | string, options?: { download?: string | boolean }): Promise<StorageReply<{ signedUrl: string }>>;
  /** One entry per path; a missing object gives its entry an `error` message and `signedUrl: null`. */
  createSignedUrls(paths: string[], expiresIn: number, options?: { download?: string | boolean }): Promise<StorageReply<{ error: string | null; path: string; signedUrl: string | null }[]>>;
  /** A URL that takes one PUT of the object's bytes, for two hours (or `expiresIn` seconds). */
  /** `upsert: true`: the URL may replace an existing object (else `Duplicate`); the token alone decides, as on Supabase. */
  createSignedUploadUrl(path: string, options?: { expiresIn?: number; upsert?: boolean }): Promise<StorageReply<{ signedUrl: string; path: string; token: string }>>;
  /** Uploads through a token from `createSignedUploadUrl` for this bucket and path (`InvalidSignature`, 400, otherwise);
   * the token decides whether an existing object may be replaced. */
  uploadToSignedUrl(path: string, token: string, body: string | ArrayBuffer | ArrayBufferView | Blob | ReadableStream | Request, options?: { contentType?: string; metadata?: Record<string, string>; cacheControl?: string | number }): Promise<StorageReply<{ path: string; id: string; fullPath: string }>>;
  /** For buckets declared public in fazt.json. */
  getPublicUrl(path: string, options?: { download?: string | boolean }): { data: { publicUrl: string } };
}

/** A bucket, as storage-js's listBuckets/getBucket give it. */
export interface BucketInfo {
  id: string;
  name: string;
  public: boolean;
  /** Bytes; null: no limit. */
  file_size_limit: number | null;
  /** Types such as `image/png` or `image/*`; null: any. */
  allowed_mime_types: string[] | null;
  /** ISO 8601. */
  created_at: string;
  updated_at: string;
}

export interface BucketOptions {
  public?: boolean;
  /** Bytes, or text such as `'20MB'` (decimal units: GB, MB, KB, B); null lifts the limit. */
  fileSizeLimit?: number | string | null;
  /** Types such as `'image/png'` or `'image/*'`; null or [] allows any. */
  allowedMimeTypes?: string[] | null;
}

export const storage: {
  /** A `storage` whose bucket calls throw their errors; `storage` itself is left as it is. */
  throwOnError(): typeof storage;
  from(bucket: string): Bucket;
  listBuckets(): Promise<StorageReply<BucketInfo[]>>;
  getBucket(id: string): Promise<StorageReply<BucketInfo>>;
  /** Refused with `BucketAlreadyExists` (409) if it exists. */
  createBucket(id: string, options?: BucketOptions): Promise<StorageReply<{ name: string }>>;
  /** Changes the options given; the others stay. */
  updateBucket(id: string, options: BucketOptions): Promise<StorageReply<{ message: string }>>;
  /** Refused with `ResourceNotEmpty` (409) while the bucket holds objects. */
  deleteBucket(id: string): Promise<StorageReply<{ message: string }>>;
  /** Removes every object in the bucket. */
  emptyBucket(id: string): Promise<StorageReply<{ message: string }>>;
};
