// Exercises the host contract from inside the sandbox; tests/ drives it over HTTP.
import { requestId } from 'fazt';
import { raise } from './fail.js';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const routes = {
  async '/echo'(request) {
    const body = new Uint8Array(await request.arrayBuffer());
    return new Response(body, { headers: { 'content-type': request.headers.get('content-type') || 'application/octet-stream' } });
  },
  async '/digest'(request) {
    const started = Date.now();
    const body = new Uint8Array(await request.arrayBuffer());
    const readMs = Date.now() - started;
    const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', body));
    return Response.json({ length: body.byteLength, sha256: hash.toHex ? hash.toHex() : Array.from(hash, (b) => b.toString(16).padStart(2, '0')).join(''), readMs });
  },
  async '/json'(request) {
    const value = await request.json();
    let second;
    try {
      await request.text();
      second = 'read twice';
    } catch (e) {
      second = e.name;
    }
    return Response.json({ value, second });
  },
  async '/read-stream'(request) {
    const reader = request.body.getReader();
    let total = 0;
    let chunks = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      chunks += 1;
    }
    return Response.json({ total, chunks });
  },
  async '/ignore-body'() {
    return Response.json({ ok: true });
  },
  async '/big'(request, url) {
    const n = Number(url.searchParams.get('n') || 0);
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = (i * 31 + 7) & 255;
    return new Response(out, { headers: { 'content-type': 'application/octet-stream' } });
  },
  async '/stream'(request) {
    const fail = new URL(request.url).searchParams.has('fail');
    let i = 0;
    const stream = new ReadableStream({
      async pull(controller) {
        if (i === 3 && fail) throw new Error('failed mid-stream');
        if (i === 3) return controller.close();
        if (i > 0) await sleep(300);
        controller.enqueue(new TextEncoder().encode(`chunk ${i++} at ${Date.now()}\n`));
      },
    });
    return new Response(stream, { headers: { 'content-type': 'text/plain' } });
  },
  async '/long-stream'(request, url) {
    const total = Number(url.searchParams.get('mb')) << 20;
    const chunk = new Uint8Array(512 << 10).fill(9); // one chunk, sent again and again: no garbage to collect
    let sent = 0;
    const stream = new ReadableStream({
      pull(controller) {
        if (sent >= total) return controller.close();
        controller.enqueue(chunk);
        sent += chunk.byteLength;
      },
    });
    return new Response(stream);
  },
  async '/random'() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Response.json({ uuid: crypto.randomUUID(), random: Math.random(), bytes: Array.from(bytes), now: Date.now() });
  },
  async '/headers'(request) {
    const headers = new Headers({ 'x-custom': 'yes', 'content-type': 'text/plain' });
    headers.append('set-cookie', 'a=1; Path=/');
    headers.append('set-cookie', 'b=2; Path=/; HttpOnly');
    return new Response(`method=${request.method} x-in=${request.headers.get('x-in')}`, { status: 201, headers });
  },
  async '/cookie'(request) {
    return new Response(request.headers.get('cookie'));
  },
  async '/framing'() {
    return new Response('abc', {
      headers: { 'content-length': '999', connection: 'close', 'x-fazt-request-id': 'forged', 'x-ok': '1' },
    });
  },
  async '/log'() {
    console.log('hello from the log', { n: 1 });
    console.warn('a warning');
    try { raise('caught and logged'); } catch (e) { console.error(e); }
    return Response.json({ requestId: requestId() });
  },
  async '/throw'() {
    raise('boom from probe');
  },
  async '/loop'() {
    for (;;) {}
  },
  async '/form'(request) {
    const entries = [];
    for (const [name, value] of await request.formData()) {
      if (typeof value === 'string') entries.push({ name, value });
      else {
        const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', await value.arrayBuffer()));
        entries.push({ name, filename: value.name, type: value.type, size: value.size, sha256: digest.toHex() });
      }
    }
    return Response.json(entries);
  },
  async '/sleep'(request) {
    const ms = Number(new URL(request.url).searchParams.get('ms'));
    if (new URL(request.url).searchParams.has('interval')) {
      await new Promise((resolve) => setInterval(resolve, ms));
    } else {
      await sleep(ms);
    }
    return Response.json({ slept: ms });
  },
  async '/bomb'() {
    const hold = [];
    for (;;) hold.push(new Uint8Array(1 << 20).fill(1));
  },
  async '/never'() {
    return new Promise(() => {});
  },
  async '/outbound'() {
    try {
      await fetch('http://example.com/');
      return Response.json({ caught: null });
    } catch (e) {
      return Response.json({ caught: e.name, message: e.message });
    }
  },
  async '/request-headers'(request) {
    return Response.json(Object.fromEntries(request.headers));
  },
  async '/big-json'(request) {
    const n = Number(new URL(request.url).searchParams.get('n'));
    return Response.json({ s: 'y'.repeat(n), tail: 'é\n' });
  },
  async '/blob'(request) {
    const blob = await request.blob();
    let refused = null;
    try {
      new Response('body', { status: 204 });
    } catch (e) {
      refused = e.message;
    }
    return Response.json({ type: blob.type, size: blob.size, refused });
  },
  async '/fat-loop'() {
    const held = new Uint8Array(600 << 20).fill(1); // then stopped at the time limit, holding it
    for (;;) if (held[0] === 2) break;
  },
  async '/status'(request, url) {
    return new Response('x', { status: Number(url.searchParams.get('s')) });
  },
  async '/response-bodies'() {
    const utf8 = (text) => new TextEncoder().encode(text);
    const head = '--B\r\nContent-Disposition: form-data; name="f"; filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n';
    const body = new Uint8Array([...utf8(head), 0, 255, 120, ...utf8('\r\n--B--\r\n')]);
    const form = await new Response(body, { headers: { 'content-type': 'multipart/form-data; boundary=B' } }).formData();
    const blob = await new Response('x', { headers: { 'content-type': 'image/png' } }).blob();
    let rsa;
    try {
      await crypto.subtle.importKey('spki', new Uint8Array(16), { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, false, ['verify']);
    } catch (e) {
      rsa = e.name;
    }
    return Response.json({
      file: [...new Uint8Array(await form.get('f').arrayBuffer())], name: form.get('f').name, blobType: blob.type,
      bytes: [...(await new Response('ab').bytes())], rsa,
    });
  },
  async '/clones-and-text-streams'() {
    const read = async (stream) => { const out = []; for await (const c of stream) out.push(c); return out; };
    const bytes = new Response(new Uint8Array([0, 255, 104]));
    const bytesCopy = bytes.clone();
    const streamed = new Response(ReadableStream.from((async function* () { yield new Uint8Array([1]); yield new Uint8Array([2]); })()));
    const streamedCopy = streamed.clone();
    const text = new Response('same', { status: 201, headers: { 'x-a': '1' } });
    const textCopy = text.clone();
    let used;
    try { await text.text(); text.clone(); } catch (e) { used = e.name; }
    const euro = new TextEncoder().encode('€uro'); // € is 3 bytes: split across two chunks
    const decoded = await read(ReadableStream.from([euro.slice(0, 2), euro.slice(2)]).pipeThrough(new TextDecoderStream()));
    const pair = '😀'; // a surrogate pair split across two chunks
    const encoded = await read(ReadableStream.from([pair[0], pair[1] + '!']).pipeThrough(new TextEncoderStream()));
    return Response.json({
      bytes: [...new Uint8Array(await bytes.arrayBuffer())], bytesCopy: [...(await bytesCopy.bytes())],
      streamed: [...(await streamed.bytes())], streamedCopy: [...(await streamedCopy.bytes())],
      textCopy: [await textCopy.text(), textCopy.status, textCopy.headers.get('x-a')], used,
      decoded, encoded: encoded.map((c) => [...c]),
    });
  },
  async '/cloned-response'() {
    const response = new Response(new Uint8Array([111, 107]), { headers: { 'content-type': 'text/plain' } });
    const copy = response.clone();
    console.log(`the copy read ${await copy.text()}`);
    return response; // sent from the branch it kept
  },
  async '/not-a-response'() {
    return { hello: 'plain object' };
  },
  async '/log-flood'() {
    for (let i = 0; i < 10000; i++) console.log('x'.repeat(100));
    console.info('after the flood'); // short enough to fit what is left of the budget
    console.error('still over');
    return new Response('flooded');
  },
  async '/env'(request, url, ctx) {
    return Response.json(ctx.env);
  },
  async '/url'(request) {
    return Response.json({
      url: request.url, prefix: request.headers.get('x-forwarded-prefix'), requestId: request.headers.get('x-fazt-request-id'),
      host: request.headers.get('host'),
    });
  },
  async '/wait-until'(request, url, ctx) {
    const ms = Number(url.searchParams.get('ms'));
    ctx.waitUntil(sleep(ms).then(() => console.log(`wait-until done after ${ms} ms`)));
    if (url.searchParams.has('reject')) ctx.waitUntil(Promise.reject(new Error('a late failure')));
    if (url.searchParams.has('late-body')) {
      ctx.waitUntil(sleep(50).then(() => request.text()).then(
        (text) => console.log(`late body read: ${text.length} chars`), (e) => console.log(`late body: ${e.name}: ${e.message}`)));
    }
    if (url.searchParams.has('throw')) throw new Error('thrown with work pending');
    if (url.searchParams.has('never')) ctx.waitUntil(new Promise(() => {}));
    if (url.searchParams.has('stream-error')) {
      return new Response(new ReadableStream({
        start(controller) {
          controller.enqueue(new TextEncoder().encode('first'));
          setTimeout(() => controller.error(new Error('the stream broke')), 10);
        },
      }));
    }
    return new Response('returned');
  },
  async '/clone'(request, url) {
    const copy = request.clone();
    if (url.searchParams.has('form')) {  // the copy reads as the original: multipart on its bytes, the client's headers
      const file = (await copy.formData()).get('file');
      const bytes = new Uint8Array(await file.arrayBuffer());
      const sha256 = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)).toHex();
      return Response.json({ size: bytes.length, sha256, host: copy.headers.get('host'), text: (await request.text()).length > 0 });
    }
    const first = await request.text();
    return Response.json({ first, copy: await copy.text(), used: request.bodyUsed });
  },
  async '/global'() {
    globalThis.counter = (globalThis.counter || 0) + 1;
    return Response.json({ counter: globalThis.counter });
  },
};

export default {
  async fetch(request, ctx) {
    const url = new URL(request.url);
    const route = routes[url.pathname];
    if (!route) return Response.json({ error: 'no route', path: url.pathname }, { status: 404 });
    return route(request, url, ctx);
  },
};
