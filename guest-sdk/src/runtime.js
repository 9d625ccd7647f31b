// Adapts an app's Workers-style `export default { fetch }` object to the
// fazt:host world: the request arrives as a JSON head, its body is pulled from
// the host only when read, and the response leaves through http.send-*.
import { write as logWrite } from 'fazt:host/log@0.1.0';
import { readBody, sendHead, sendBody, finish } from 'fazt:host/http@0.1.0';

// The most bytes one read-body call may bring: the host answers with pieces of
// its own size (it reads the next one while the guest decodes this one).
const READ_MAX = 16 << 20;
// Bytes per send-body (and upload-write) call. The host sees each word as a
// 32-byte value: 512 KiB pieces keep those arrays in memory the allocator
// reuses, twice as fast overall as 8 MiB ones that map fresh pages each call.
const SEND_CHUNK = 512 << 10;
// A complete body up to this size returns inline with the head, in the export's
// result (base64 in the JSON), saving the two host calls that send it otherwise:
// measured in one process, inline is ~0.15 ms faster at 2-4 KiB, even at 8 KiB,
// and slower past 16 KiB, where encoding the bigger string costs more than the calls.
const INLINE_MAX = 8 << 10;

let currentRequestId = '';
let currentRequest = null;
let currentApp = '';

// Module top levels run once, at build time, into the snapshot every call starts from: a random value
// made there would be the same in every request (and the build has no entropy to give). Until the
// first call, the random sources throw an error that names the app's line.
const randomSources = [[Math, 'Math', 'random'], [crypto, 'crypto', 'getRandomValues'], [crypto, 'crypto', 'randomUUID']];
const nativeRandom = randomSources.map(([owner, , name]) => owner[name]);
let buildTime = true;
for (const [owner, ownerName, name] of randomSources) {
  owner[name] = function () {
    throw new Error(`${ownerName}.${name}() at the top level of a module would run once, at build time, for every request: call it inside the handler`);
  };
}
function endBuildTime() {
  if (!buildTime) return;
  buildTime = false;
  randomSources.forEach(([owner, , name], i) => { owner[name] = nativeRandom[i]; });
}

function formatArg(v) {
  if (typeof v === 'string') return v;
  if (v instanceof Error) return v.stack ? `${v.name}: ${v.message}\n${v.stack}` : `${v.name}: ${v.message}`;
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s;
  } catch {
    return String(v);
  }
}

function logger(level) {
  return (...args) => logWrite(level, args.map(formatArg).join(' '));
}

globalThis.console = {
  log: logger('info'),
  info: logger('info'),
  debug: logger('debug'),
  warn: logger('warn'),
  error: logger('error'),
  trace: logger('debug'),
};

// The engine's JSON.stringify runs out of memory quoting one string of about 1.5-2.5 million characters
// under the default 128 MiB limit (its buffer growth; shorter and longer ones pass). Such a string is
// then quoted in pieces and put in place of a marker: the same text.
const nativeStringify = JSON.stringify;
const LONG_STRING = 1 << 20;
JSON.stringify = function stringify(value, replacer, space) {
  try {
    return nativeStringify(value, replacer, space);
  } catch (e) {
    if (e !== 'out of memory' || Array.isArray(replacer)) throw e;
    const long = [];
    const marker = '\u0000fazt-long-string:'; // text no app writes: NUL first
    const swap = function (key, v) {
      if (typeof replacer === 'function') v = replacer.call(this, key, v);
      if (typeof v !== 'string' || v.length < LONG_STRING) return v;
      long.push(v);
      return `${marker}${long.length - 1}`;
    };
    const text = nativeStringify(value, swap, space);
    const quoted = (s) => {
      const pieces = [];
      for (let i = 0; i < s.length; i += 1 << 16) pieces.push(nativeStringify(s.slice(i, i + (1 << 16))).slice(1, -1));
      return `"${pieces.join('')}"`;
    };
    const escaped = nativeStringify(marker).slice(1, -1);
    return text.replaceAll(new RegExp(`"${escaped.replace(/[\\.]/g, '\\$&')}(\\d+)"`, 'g'), (_, i) => quoted(long[i]));
  }
};

// The build leaves the engine without outbound HTTP, where fetch() would return a promise that never
// settles (the engine then stops the handler): reject at once, so an app can catch it.
globalThis.fetch = async function fetch() {
  throw new TypeError("fetch() is not available: apps reach the network only through the host's imports");
};

// The time limit. A guest waiting for a timer sleeps inside the host's poll,
// where the wall-time interrupt cannot reach it, so a timer due after the limit
// is replaced by one at the limit that spins: the host then stops the handler
// there (504), and its wasm thread is free for the next request.
// performance.now() counts from the instance's first call.
const nativeSetTimeout = globalThis.setTimeout;
const nativeSetInterval = globalThis.setInterval;
let deadline = Infinity;

function startClock(timeoutMs) {
  deadline = typeof timeoutMs === 'number' ? performance.now() + timeoutMs : Infinity;
}

function stopAtLimit() {
  for (;;) {} // past the limit: the host's interrupt ends this loop and the call
}

function bounded(native) {
  return function (callback, delay, ...args) {
    const remaining = deadline === Infinity ? Infinity : deadline - performance.now();
    if ((Number(delay) || 0) > remaining) return nativeSetTimeout(stopAtLimit, Math.max(0, remaining));
    return native(callback, delay, ...args);
  };
}
globalThis.setTimeout = bounded(nativeSetTimeout);
globalThis.setInterval = bounded(nativeSetInterval);

// The engine's build aborts on RSA and elliptic-curve keys (an `unreachable` trap that ends the
// whole sandbox, reported as a 500): refused here with Web Crypto's NotSupportedError, which a
// handler can catch. HMAC and the digests work.
const subtle = Object.getPrototypeOf(crypto.subtle);
const nativeImportKey = subtle.importKey;
const UNSUPPORTED_KEYS = /^(RSASSA-PKCS1-v1_5|RSA-PSS|RSA-OAEP|ECDSA|ECDH)$/i;
subtle.importKey = function importKey(format, keyData, algorithm, ...rest) {
  const name = typeof algorithm === 'string' ? algorithm : algorithm?.name;
  if (typeof name === 'string' && UNSUPPORTED_KEYS.test(name)) {
    return Promise.reject(new DOMException(`${name} keys are not supported in this runtime (HMAC is)`, 'NotSupportedError'));
  }
  return nativeImportKey.call(this, format, keyData, algorithm, ...rest);
};

// Streams helpers of the web platform the engine lacks, used to read bodies as text, iterate them
// or make them from iterables (`for await (const text of request.body.pipeThrough(new TextDecoderStream()))`).
if (typeof globalThis.TextDecoderStream !== 'function') {
  globalThis.TextDecoderStream = class TextDecoderStream extends TransformStream {
    constructor(label = 'utf-8', options = {}) {
      const decoder = new TextDecoder(label, options);
      super({
        transform(chunk, controller) {
          const text = decoder.decode(chunk, { stream: true });
          if (text) controller.enqueue(text);
        },
        flush(controller) {
          const text = decoder.decode();
          if (text) controller.enqueue(text);
        },
      });
      this.encoding = decoder.encoding;
      this.fatal = decoder.fatal;
      this.ignoreBOM = decoder.ignoreBOM;
    }
  };
}
if (typeof globalThis.TextEncoderStream !== 'function') {
  globalThis.TextEncoderStream = class TextEncoderStream extends TransformStream {
    constructor() {
      const encoder = new TextEncoder();
      let high = ''; // a lone high surrogate waiting for the chunk that ends its pair
      super({
        transform(chunk, controller) {
          let text = high + String(chunk);
          high = '';
          const last = text.charCodeAt(text.length - 1);
          if (last >= 0xd800 && last <= 0xdbff) {
            high = text.slice(-1);
            text = text.slice(0, -1);
          }
          if (text) controller.enqueue(encoder.encode(text));
        },
        flush(controller) {
          if (high) controller.enqueue(encoder.encode(high)); // U+FFFD, as the standard says
        },
      });
      this.encoding = 'utf-8';
    }
  };
}
if (typeof ReadableStream.prototype[Symbol.asyncIterator] !== 'function') {
  // `for await (const chunk of stream)`; leaving the loop early cancels the stream unless preventCancel.
  ReadableStream.prototype.values = async function* values({ preventCancel = false } = {}) {
    const reader = this.getReader();
    let finished = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          finished = true;
          return;
        }
        yield value;
      }
    } finally {
      if (!finished && !preventCancel) await reader.cancel();
      reader.releaseLock();
    }
  };
  ReadableStream.prototype[Symbol.asyncIterator] = ReadableStream.prototype.values;
}
if (typeof ReadableStream.from !== 'function') {
  ReadableStream.from = function from(iterable) {
    const iterator = iterable?.[Symbol.asyncIterator]?.() ?? iterable?.[Symbol.iterator]?.();
    if (!iterator) throw new TypeError('ReadableStream.from takes an iterable or async iterable');
    return new ReadableStream(
      {
        async pull(controller) {
          const { value, done } = await iterator.next();
          if (done) controller.close();
          else controller.enqueue(value);
        },
        async cancel(reason) {
          await iterator.return?.(reason);
        },
      },
      { highWaterMark: 0 },
    );
  };
}

// Body readers the engine gets wrong, for the SDK's Request and Response (the engine's own
// prototypes stay as they are: changed, every request's property lookups through them slowed):
// blob() loses the content type, and the multipart parser decodes file parts as text, which breaks
// binary files, so multipart bodies are parsed here, on their bytes.
function typedBlob(message, bytes) {
  return new Blob([bytes], { type: message.headers.get('content-type') ?? '' });
}

async function formDataOf(message, native) {
  const type = message.headers.get('content-type') ?? '';
  if (!/^multipart\/form-data\s*;/i.test(type)) return native();
  return parseMultipart(await message.bytes(), type);
}

// A request body is pulled from the host only when the handler reads it,
// whole (arrayBuffer/bytes/text/json) or as `request.body`, a piece per pull.
const bodies = new WeakMap(); // request -> { streamed, used }

// The request body streams not yet read: storage can pipe one host-side instead.
const hostBodies = new WeakMap(); // stream -> state

// The request whose untouched body `stream` is (the request itself, or its body), the body now counting
// as read: the host can then move its bytes without the sandbox. null for any other body.
export function claimRequestBody(stream) {
  let state = hostBodies.get(stream);
  if (!state && currentRequest && (stream === currentRequest || stream === currentRequest.body)) {
    state = bodies.get(currentRequest);
  }
  if (!state || state.streamed || state.used || responseEnded) return null;
  state.used = true;
  return stream instanceof Request ? stream : currentRequest;
}

// Whether `body` is a body already read or being read (text(), json(), a reader): as fetch() does,
// the SDK refuses to send one, which would otherwise go as what is left of it (nothing, once read).
export function bodyDisturbed(body) {
  if (responseEnded && body != null && currentRequest && (body === currentRequest || body === currentRequest.body)) return true;
  if (body instanceof Request) return body.bodyUsed;
  if (!(body instanceof ReadableStream)) return false;
  if (body.locked) return true;
  if (currentRequest && body === currentRequest.body) return currentRequest.bodyUsed;
  const state = hostBodies.get(body);
  return Boolean(state && (state.streamed || state.used));
}

function requestBody(state) {
  const stream = new ReadableStream(
    {
      pull(controller) {
        if (responseEnded) {
          controller.error(new TypeError(BODY_GONE));
          return;
        }
        state.streamed = true;
        const b64 = readBody(READ_MAX);
        if (b64 === '') controller.close();
        else controller.enqueue(Uint8Array.fromBase64(b64));
      },
    },
    { highWaterMark: 0 },
  );
  hostBodies.set(stream, state);
  return stream;
}

// Reads base64 pieces from `read()` until it returns "" into one buffer. With
// the size known up front each piece decodes in place, and no copy joins them.
export function readAll(read, size = 0) {
  let bytes = new Uint8Array(size);
  let length = 0;
  for (;;) {
    const b64 = read();
    if (b64 === '') break;
    const n = (b64.length >> 2) * 3 - (b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0);
    if (length + n > bytes.byteLength) {
      const grown = new Uint8Array(Math.max(bytes.byteLength * 2, length + n));
      grown.set(bytes.subarray(0, length));
      bytes = grown;
    }
    length += bytes.subarray(length).setFromBase64(b64).written;
  }
  return length === bytes.byteLength ? bytes : bytes.slice(0, length);
}

// The request's headers as the client sent them: the engine's Request drops the ones the Fetch
// standard forbids a browser script to set (host, connection, te...), which a server sees, as
// Workers' request.headers does. Built on first use, from the head's list.
const clientHeaders = new WeakMap(); // request -> header list, then Headers

const NativeRequest = globalThis.Request;
class Request extends NativeRequest {
  get headers() {
    let headers = clientHeaders.get(this);
    if (headers === undefined) return super.headers;
    if (Array.isArray(headers)) clientHeaders.set(this, (headers = new Headers(headers)));
    return headers;
  }
  // An unread body is then read through the engine's stream, which the clone tees. The copy is
  // one of ours too (the client's headers, multipart parsed on bytes, text() that replaces bad UTF-8).
  clone() {
    const state = bodies.get(this);
    if (state && !state.used) state.streamed = true;
    const copy = Object.setPrototypeOf(super.clone(), Request.prototype);
    const headers = clientHeaders.get(this);
    if (headers !== undefined) clientHeaders.set(copy, new Headers(headers));
    return copy;
  }
  get bodyUsed() {
    return bodies.get(this)?.used || super.bodyUsed;
  }
  async bytes() {
    const state = bodies.get(this);
    if (!state || state.streamed) return new Uint8Array(await super.arrayBuffer());
    if (state.used) throw new TypeError('Body has already been consumed.');
    if (responseEnded) throw new TypeError(BODY_GONE);
    state.used = true;
    const declared = Number(this.headers.get('content-length'));
    return readAll(() => readBody(READ_MAX), Number.isSafeInteger(declared) && declared > 0 ? declared : 0);
  }
  async arrayBuffer() {
    const bytes = await this.bytes();
    return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes.buffer : bytes.slice().buffer;
  }
  async text() {
    return new TextDecoder().decode(await this.bytes());
  }
  async json() {
    return JSON.parse(await this.text());
  }
  async blob() {
    return typedBlob(this, await this.bytes());
  }
  async formData() {
    return formDataOf(this, () => super.formData());
  }
}

const utf8 = new TextEncoder();

// Where `pattern` starts in `bytes` at or after `from` (-1 if nowhere): the
// native indexOf finds candidates for its first byte.
function find(bytes, pattern, from) {
  const last = bytes.byteLength - pattern.byteLength;
  for (let i = bytes.indexOf(pattern[0], from); i !== -1 && i <= last; i = bytes.indexOf(pattern[0], i + 1)) {
    let j = 1;
    while (j < pattern.byteLength && bytes[i + j] === pattern[j]) j++;
    if (j === pattern.byteLength) return i;
  }
  return -1;
}

function dispositionParam(disposition, key) {
  const m = new RegExp(`(?:^|;)\\s*${key}\\s*=\\s*(?:"((?:[^"\\\\]|\\\\.)*)"|([^;]*))`, 'i').exec(disposition);
  if (!m) return null;
  return m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2].trim();
}

function parseMultipart(bytes, type) {
  const m = /;\s*boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))/i.exec(type);
  if (!m) throw new TypeError('multipart/form-data without a boundary');
  const boundary = m[1] ?? m[2];
  const malformed = () => new TypeError('malformed multipart/form-data body');
  const opening = utf8.encode(`--${boundary}`);
  const delimiter = utf8.encode(`\r\n--${boundary}`);
  const headEnd = utf8.encode('\r\n\r\n');
  const decoder = new TextDecoder();
  const form = new FormData();
  let at = find(bytes, opening, 0);
  if (at === -1) throw malformed();
  at += opening.byteLength;
  for (;;) {
    if (bytes[at] === 0x2d && bytes[at + 1] === 0x2d) return form; // "--": the closing delimiter
    while (bytes[at] === 0x20 || bytes[at] === 0x09) at++; // transport padding
    if (bytes[at] !== 0x0d || bytes[at + 1] !== 0x0a) throw malformed();
    const headers = at + 2;
    const body = find(bytes, headEnd, headers - 2);
    if (body === -1) throw malformed();
    const end = find(bytes, delimiter, body + 4);
    if (end === -1) throw malformed();
    let disposition = '';
    let partType = null;
    for (const line of decoder.decode(bytes.subarray(headers, body)).split('\r\n')) {
      const colon = line.indexOf(':');
      const field = line.slice(0, colon).trim().toLowerCase();
      if (field === 'content-disposition') disposition = line.slice(colon + 1).trim();
      else if (field === 'content-type') partType = line.slice(colon + 1).trim();
    }
    const name = dispositionParam(disposition, 'name');
    const filename = dispositionParam(disposition, 'filename');
    const content = bytes.subarray(body + 4, end);
    if (name === null) {
      // a part without a name is not a form field
    } else if (filename === null) {
      form.append(name, decoder.decode(content));
    } else {
      form.append(name, new File([content.slice()], filename, { type: partType ?? 'text/plain' }));
    }
    at = end + delimiter.byteLength;
  }
}

// Bytes for a list<u64> host call: [words, length] pieces of at most SEND_CHUNK
// bytes, viewed in place when aligned, else copied into a zero-padded buffer.
export function* wordChunks(u8) {
  for (let off = 0; off < u8.byteLength; off += SEND_CHUNK) {
    const part = u8.subarray(off, Math.min(off + SEND_CHUNK, u8.byteLength));
    const n = part.byteLength;
    if (part.byteOffset % 8 === 0 && n % 8 === 0) {
      yield [new BigUint64Array(part.buffer, part.byteOffset, n >> 3), n];
    } else {
      const padded = new Uint8Array((n + 7) & ~7);
      padded.set(part);
      yield [new BigUint64Array(padded.buffer, 0, padded.byteLength >> 3), n];
    }
  }
}

function sendBytes(u8) {
  for (const [words, n] of wordChunks(u8)) sendBody(words, n);
}

function headerList(headers) {
  const list = [];
  const cookies = typeof headers.getSetCookie === 'function' ? headers.getSetCookie() : [];
  for (const [name, value] of headers) {
    if (name === 'set-cookie' && cookies.length) continue;
    list.push([name, value]);
  }
  for (const c of cookies) list.push(['set-cookie', c]);
  return list;
}

// Responses made from a ReadableStream are sent chunk by chunk as the stream
// yields; any other body is read in one native call (touching `.body` would
// build a stream object for nothing).
const streamed = new WeakSet();
// The string a response was made from: sent as it is, without reading the body
// back through the engine's stream and its promises.
const texts = new WeakMap();
const NativeResponse = globalThis.Response;
// Statuses whose responses carry no body (the engine's own error for one garbles the sentence).
const NULL_BODY_STATUS = new Set([204, 205, 304]);

globalThis.Response = class Response extends NativeResponse {
  constructor(body, init) {
    // The Fetch standard's RangeError; the engine wraps the number to 16 bits instead (99999 became 34463).
    const status = init?.status === undefined ? 200 : Number(init.status);
    if (!(Number.isInteger(status) && status >= 200 && status <= 599)) {
      throw new RangeError(`a response's status must be 200 to 599, not ${String(init.status).slice(0, 20)}`);
    }
    if (body != null && NULL_BODY_STATUS.has(status)) {
      throw new TypeError(`a response with status ${init.status} cannot have a body`);
    }
    super(body, init);
    if (body instanceof ReadableStream) streamed.add(this);
    else if (typeof body === 'string') texts.set(this, body);
    else if (body == null) texts.set(this, '');
  }
  async bytes() { // Fetch's, which the engine lacks
    return new Uint8Array(await this.arrayBuffer());
  }
  async blob() {
    return typedBlob(this, await this.bytes());
  }
  async formData() {
    return formDataOf(this, () => super.formData());
  }
  // Fetch's, which the engine lacks. A body made from a string is shared; any other is teed, and
  // this response reads its branch from then on (through ClonedResponse: a response never cloned
  // pays nothing for it).
  clone() {
    if (this.bodyUsed) throw new TypeError('Response.clone: the body has already been read');
    const init = { status: this.status, statusText: this.statusText, headers: new Headers(this.headers) };
    const text = texts.get(this); // '' for no body
    const body = text === undefined ? this.body : null;
    if (body === null) {
      const copy = new Response(text || null, init);
      const answer = hostAnswered.get(this);
      if (answer) hostAnswered.set(copy, answer);
      return copy;
    }
    const [mine, theirs] = body.tee();
    delegates.set(this, new Response(mine, init));
    Object.setPrototypeOf(this, ClonedResponse.prototype);
    streamed.add(this);
    return new Response(theirs, init);
  }
  static json(data, init) {
    const text = JSON.stringify(data);
    if (text === undefined) throw new TypeError('Response.json: the data cannot be serialized to JSON');
    const headers = new Headers(init?.headers);
    if (!headers.has('content-type')) headers.set('content-type', 'application/json');
    return new Response(text, { status: init?.status, statusText: init?.statusText, headers });
  }
};

// A cloned response -> the response reading the branch of its body it kept.
const delegates = new WeakMap();

class ClonedResponse extends globalThis.Response {
  get body() { return delegates.get(this).body; }
  get bodyUsed() { return delegates.get(this).bodyUsed; }
  arrayBuffer() { return delegates.get(this).arrayBuffer(); }
  bytes() { return delegates.get(this).bytes(); }
  text() { return delegates.get(this).text(); }
  json() { return delegates.get(this).json(); }
  blob() { return delegates.get(this).blob(); }
  formData() { return delegates.get(this).formData(); }
}

// Responses whose bytes the host sends itself (a stored object): no body crosses the sandbox.
const hostAnswered = new WeakMap(); // response -> { object: {...} }

export function hostResponse(answer, init = {}) {
  const response = new globalThis.Response(null, init);
  hostAnswered.set(response, answer);
  return response;
}

// Returns the export's result: the whole response when it is small and complete,
// else sends it through http.send-head/send-body and returns {"sent": true}.
// `more` (waitUntil promises pending) sends it and ends it with http.finish, so
// it leaves before they settle. A response made from a string is answered at
// once; one whose bytes must be read back, or a stream, returns a promise.
function sendResponse(response, more) {
  const head = { status: response.status, headers: headerList(response.headers) };
  const answer = hostAnswered.get(response);
  if (answer) return JSON.stringify({ ...head, ...answer });
  if (streamed.has(response)) return sendStream(response, head, more);
  const text = texts.get(response);
  if (text !== undefined && !response.bodyUsed) return sendComplete(utf8.encode(text), head, more);
  return response.arrayBuffer().then((buffer) => sendComplete(new Uint8Array(buffer), head, more));
}

function sendComplete(bytes, head, more) {
  if (bytes.byteLength <= INLINE_MAX && !more()) {
    head.body = bytes.toBase64();
    return JSON.stringify(head);
  }
  head.length = bytes.byteLength;
  startResponse(head);
  sendBytes(bytes);
  if (more()) endResponse();
  return SENT;
}

async function sendStream(response, head, more) {
  startResponse(head);
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      if (more()) endResponse();
      return SENT;
    }
    if (typeof value === 'string') sendBytes(utf8.encode(value));
    else if (value instanceof Uint8Array) sendBytes(value);
    else if (ArrayBuffer.isView(value)) sendBytes(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
    else if (value instanceof ArrayBuffer) sendBytes(new Uint8Array(value));
    else throw new TypeError('response body chunks must be bytes or strings');
  }
}

const SENT = '{"sent":true}';

// What of the response has gone: its head; all of it, while the invocation runs on (waitUntil work),
// and then the request's body is gone too.
let headSent = false;
let responseEnded = false;
const BODY_GONE = "the request body can't be read after the response has been sent";

function startResponse(head) {
  headSent = true;
  sendHead(JSON.stringify(head));
}

function endResponse() {
  finish();
  responseEnded = true;
}

// A handler that failed with waitUntil work pending: as on Workers, its error is logged and answered
// at once (a 500, or the end of a response already under way) and the work runs on to its end.
function failAfter(extended, e) {
  if (!extended?.pending.length) return failure(e);
  const error = errorText(e);
  console.error(`the handler threw ${error}${e?.stack ? `\n${e.stack}` : ''}`);
  if (!headSent) {
    const body = utf8.encode(JSON.stringify({ error: `the handler threw ${error}`, requestId: currentRequestId }));
    startResponse({ status: 500, headers: [['content-type', 'application/json']], length: body.byteLength });
    sendBytes(body);
  }
  if (!responseEnded) endResponse();
  return extended.settled().then(() => SENT);
}

// ctx.waitUntil: its promises, each reporting a rejection to `rejected` when it happens.
function lifetime(rejected) {
  const pending = [];
  return {
    pending,
    waitUntil(promise) { pending.push(Promise.resolve(promise).catch(rejected)); },
    async settled() { // also the promises added meanwhile
      for (let done = 0; done < pending.length; ) {
        const batch = pending.slice(done);
        done = pending.length;
        await Promise.all(batch);
      }
    },
  };
}

const errorText = (e) => (e instanceof Error ? `${e.name}: ${e.message}` : formatArg(e));

// `source` 'waitUntil': a ctx.waitUntil promise rejected after the handler returned.
function failure(e, source) {
  const error = errorText(e);
  return JSON.stringify(source ? { error, stack: (e && e.stack) || '', source } : { error, stack: (e && e.stack) || '' });
}

// The handler of a cron entry: its file's default export (a function, or an
// object with `scheduled`), else the app's own `scheduled`.
function cronHandler(app, crons, name) {
  const own = Object.hasOwn(crons, name) ? crons[name] : undefined; // not Object.prototype's
  if (typeof own === 'function') return own;
  if (own && typeof own.scheduled === 'function') return own.scheduled.bind(own);
  if (own) throw new TypeError(`the file of cron entry '${name}' must export default a function (event, ctx)`);
  if (app && typeof app.scheduled === 'function') return app.scheduled.bind(app);
  throw new TypeError(`no handler for cron entry '${name}': give it a "file" or export default { async scheduled(event, ctx) { ... } }`);
}

// Answers a request: the export's result, or a promise of it. Every promise
// costs the engine a capture of the JS stack (together a quarter of a trivial
// request's guest call when the SDK made its own), so the usual path makes
// none of its own: the handler's promise is followed with one `then`, and a
// response made from a string is sent without awaiting anything.
function serveFetch(app, json) {
  const head = JSON.parse(json);
  startClock(head.timeoutMs);
  currentRequestId = head.requestId;
  currentApp = head.app;
  headSent = responseEnded = false;
  let extended = null;
  try {
    if (!app || typeof app.fetch !== 'function') {
      throw new TypeError('the app has no fetch handler: export default { async fetch(request, ctx) { ... } }');
    }
    const init = { method: head.method, headers: head.headers };
    const state = { streamed: false, used: false };
    if (head.hasBody) {
      init.body = requestBody(state);
      init.duplex = 'half';
    }
    const request = new Request(head.url, init);
    clientHeaders.set(request, head.headers);
    if (head.hasBody) bodies.set(request, state);
    currentRequest = request;
    extended = lifetime((reason) => console.error('a waitUntil promise rejected:', reason));
    const ctx = {
      requestId: head.requestId,
      app: head.app,
      env: Object.freeze(head.env || {}),
      waitUntil: extended.waitUntil,
      passThroughOnException() {},
    };
    // ctx third too: a framework written for Workers' fetch(request, env, ctx) (Hono's c.executionCtx)
    // finds waitUntil where it looks.
    const returned = (head.warmUp ? warmUpApp : app).fetch(request, ctx, ctx);
    const answer = (response) => respond(response, extended);
    return typeof returned?.then === 'function' ? returned.then(answer, (e) => failAfter(extended, e)) : answer(returned);
  } catch (e) {
    return failAfter(extended, e);
  }
}

function respond(response, extended) {
  try {
    if (!(response instanceof NativeResponse)) {
      throw new TypeError(`fetch must return a Response, got ${response === null ? 'null' : typeof response}`);
    }
    const result = sendResponse(response, () => extended.pending.length > 0);
    if (typeof result === 'string' && !extended.pending.length) return result;
    return Promise.resolve(result)
      .then(async (sent) => {
        await extended.settled();
        return sent;
      })
      .catch((e) => failAfter(extended, e));
  } catch (e) {
    return failAfter(extended, e);
  }
}

// The cron entries among `names` without a handler, looked up in the exports only (no app code runs).
function handlersMissing(app, crons, names) {
  const missing = names.filter((name) => {
    try {
      cronHandler(app, crons, name);
      return false;
    } catch {
      return true;
    }
  });
  return JSON.stringify({ missing });
}

export function handlerFor(app, crons = {}) {
  return {
    async scheduled(json) {
      endBuildTime();
      const ev = JSON.parse(json);
      if (Array.isArray(ev.handlers)) return handlersMissing(app, crons, ev.handlers); // a deploy's check
      startClock(ev.timeoutMs);
      currentRequestId = ev.requestId;
      currentApp = ev.app;
      currentRequest = null; // the snapshot holds the build's warm-up request: a cron run has none
      try {
        const handler = cronHandler(app, crons, ev.name);
        const reasons = [];
        const extended = lifetime((reason) => reasons.push(reason));
        const event = Object.freeze({
          name: ev.name,
          scheduledTime: ev.scheduledTime,
          attempt: ev.attempt,
          lastRun: ev.lastRun,
          schedule: ev.schedule,
          timezone: ev.timezone,
          manual: ev.manual,
        });
        const ctx = {
          requestId: ev.requestId,
          app: ev.app,
          env: Object.freeze(ev.env || {}),
          waitUntil: extended.waitUntil,
        };
        await handler(event, ctx);
        await extended.settled();
        if (reasons.length) return failure(reasons[0], 'waitUntil'); // the run failed
        return '{}';
      } catch (e) {
        return failure(e);
      }
    },
    fetch(json) {
      endBuildTime();
      return serveFetch(app, json);
    },
  };
}

export function requestId() {
  return currentRequestId;
}

// Where the app is mounted for the current request ('/<app>', or '' on its own host name).
// The scheme and host the current request came to (storage-js's URLs are absolute); '' in a cron run.
export function requestOrigin() {
  return currentRequest ? new URL(currentRequest.url).origin : '';
}

export function mountPrefix() {
  const prefix = currentRequest?.headers.get('x-forwarded-prefix');
  return prefix ?? `/${currentApp}`;
}

// Build-time warm-up. componentize-js snapshots the module's top level with
// Wizer, and every request starts from that snapshot in a fresh instance, so
// whatever the engine creates lazily on first use (standard constructors and
// prototypes, object shapes, atoms) is paid by every request unless it exists
// at build time. So one request is served at build time through the whole
// export path, componentize-js's glue included (guest-sdk/build.mjs calls the
// export once the bindings are bound), by this built-in app instead of the
// app's own (no app code runs at build time, and nothing reaches the host: the
// response is inline). The realm in which componentize-js evaluates its
// bindings (each export call there builds a promise and typed-array and
// DataView views of memory) is reached here through the Function constructor
// of an imported function.
const warmUpApp = {
  async fetch(request) {
    new URL(request.url).searchParams.get('q');
    request.headers.get('host');
    new Response('', { status: 404 });
    return Response.json({ ok: true });
  },
};

function warmUpBindingsRealm() {
  try {
    logWrite.constructor(`
      for (const name of Object.getOwnPropertyNames(globalThis)) {
        const value = globalThis[name];
        if (typeof value === 'function') value.prototype;
        else if (name === 'WebAssembly') for (const c of Object.values(value)) c.prototype;
      }
      const bytes = new Uint8Array(new ArrayBuffer(8), 0, 4);
      new TextEncoder().encodeInto('{}', bytes);
      new TextDecoder().decode(bytes);
      new DataView(bytes.buffer).setUint32(0, 1, true);
      (async () => { await (async () => '')(); })();
    `)();
  } catch {
    // A componentize-js that lays out its bindings differently only loses the warm-up.
  }
}
warmUpBindingsRealm();
