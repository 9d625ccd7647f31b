// Storage through the SDK, driven by tests over HTTP:
//   (KEY may also come as ?key=, for keys a URL path cannot carry, such as '/a//b/')
//   PUT  /pipe/BUCKET/KEY?upsert=1&meta=&cache=   uploads the request body host-side (never in the sandbox)
//   PUT  /bytes/BUCKET/KEY   reads the body in the guest, uploads the bytes
//   PUT  /chunks/BUCKET/KEY?n=N&size=S  uploads a ReadableStream of N generated chunks
//   GET  /get/BUCKET/KEY     downloads and returns the bytes (an error with `classed`: its class is storage-js's)
//   GET  /list/BUCKET?path=&cursor=&limit=&offset=&search=&sort=COLUMN&order=   GET /head|info|exists/BUCKET/KEY
//   GET  /sign/BUCKET/KEY?expires=&download=   GET /signs/BUCKET?keys=a,b   GET /public/BUCKET/KEY?download
//   GET  /sign-upload/BUCKET/KEY?upsert=1   PUT /to-signed/BUCKET/KEY?token=T&upsert=1   uploadToSignedUrl(body)
//   DELETE /o/BUCKET?keys=a,b   POST /copy|move/BUCKET {from, to, destinationBucket, upsert}
//   POST /buckets/METHOD/ID {options}   storage.METHOD(ID, options): listBuckets, createBucket...
//   PUT  /pipe-as-sent/BUCKET/KEY   upload(key, request.body) with no options
//   POST /read-first/BUCKET   reads the body, then uploads request.body and the request
//   POST /forms/BUCKET   the other body kinds and option forms storage-js takes, and throwOnError()
import { storage, StorageError, StorageApiError, isStorageError } from 'fazt';

function json(value, status = 200) {
  return Response.json(value, { status });
}

export default {
  async fetch(request) {
    const url = new URL(request.url);
    const [, action, bucket, ...rest] = url.pathname.split('/');
    const key = url.searchParams.get('key') ?? decodeURIComponent(rest.join('/')); // ?key= for keys a path cannot carry
    const b = storage.from(bucket);
    const options = {
      contentType: request.headers.get('content-type') ?? undefined,
      upsert: url.searchParams.get('upsert') === '1',
      metadata: url.searchParams.has('meta') ? { note: url.searchParams.get('meta') } : {},
      cacheControl: url.searchParams.get('cache') ?? undefined,
    };
    if (action === 'buckets') {
      const options = request.headers.get('content-length') > 0 ? await request.json() : undefined;
      return json(await storage[bucket](key, options));
    }
    if (action === 'pipe') return json(await b.upload(key, request.body, options));
    if (action === 'to-signed') return json(await b.uploadToSignedUrl(key, url.searchParams.get('token'), request.body, options));
    if (action === 'bytes') return json(await b.upload(key, new Uint8Array(await request.arrayBuffer()), options));
    if (action === 'chunks') {
      const n = Number(url.searchParams.get('n'));
      const size = Number(url.searchParams.get('size'));
      let i = 0;
      const stream = new ReadableStream({
        pull(controller) {
          if (i === n) return controller.close();
          controller.enqueue(new Uint8Array(size).fill(i++ % 256));
        },
      });
      return json(await b.upload(key, stream, options));
    }
    if (action === 'get') {
      const { data, error } = await b.download(key);
      const classed = error instanceof StorageApiError && error instanceof StorageError && isStorageError(error);
      if (error) return json({ error, classed }, Number(error.statusCode));
      return new Response(data, { headers: { 'content-type': data.type } });
    }
    if (action === 'list') {
      const cursor = url.searchParams.get('cursor') ?? undefined;
      const limit = Number(url.searchParams.get('limit') ?? 100);
      const offset = Number(url.searchParams.get('offset') ?? 0);
      const q = (name) => url.searchParams.get(name) ?? undefined;
      const sortBy = url.searchParams.has('sort') ? { column: q('sort'), order: q('order') } : undefined;
      return json(await b.list(q('path') ?? '', { limit, offset, cursor, search: q('search'), sortBy }));
    }
    if (action === 'head') return json(await b.head(key));
    if (action === 'info') return json(await b.info(key));
    if (action === 'exists') return json(await b.exists(key));
    if (action === 'o' && request.method === 'DELETE') return json(await b.remove(url.searchParams.get('keys').split(',')));
    if (action === 'copy' || action === 'move') {
      const { from, to, destinationBucket, upsert } = await request.json();
      return json(await b[action](from, to, { destinationBucket, upsert }));
    }
    if (action === 'text') return json(await b.upload(key, 'hello text'));
    if (action === 'stream') {
      const opts = url.searchParams.has('range') ? { range: url.searchParams.get('range') || null } : {};
      const headers = { 'cache-control': 'private, max-age=60' };
      if (url.searchParams.has('framing')) Object.assign(headers, { 'content-length': '5', 'x-fazt-request-id': 'forged' });
      return b.stream(key, { ...opts, headers });
    }
    if (action === 'sign') {
      const download = url.searchParams.has('download') ? url.searchParams.get('download') || true : undefined;
      return json(await b.createSignedUrl(key, url.searchParams.get('expires') ?? 60, { download })); // as given: '60'
    }
    if (action === 'signs') return json(await b.createSignedUrls(url.searchParams.get('keys').split(','), 60));
    if (action === 'sign-upload') return json(await b.createSignedUploadUrl(key, { upsert: options.upsert }));
    if (action === 'public') return json(b.getPublicUrl(key, { download: url.searchParams.has('download') }));
    if (action === 'pipe-as-sent') return json(await b.upload(key, request.body));
    if (action === 'read-first') {
      const text = await request.text();
      return json({ text, body: await b.upload('used', request.body), request: await b.upload('used2', request) });
    }
    if (action === 'forms') {
      const form = new FormData();
      form.append('note', 'not a file');
      form.append('file', new File(['form bytes'], 'a.png', { type: 'image/png' }));
      const caught = async (call) => {
        try {
          return { returned: await call() };
        } catch (e) {
          return { threw: e instanceof StorageApiError ? e.error : String(e) };
        }
      };
      return json({
        form: await b.upload('form.png', form),
        formInfo: (await b.info('form.png')).data,
        noFile: await b.upload('none', new FormData()),
        params: await b.upload('params.txt', new URLSearchParams({ a: '1', b: 'x y' })),
        paramsText: await (await b.download('params.txt')).data.text(),
        nullOptions: [
          await b.upload('n.txt', 'n', null), await b.list('', null), await b.createSignedUrl('n.txt', 60, null),
          await b.copy('n.txt', 'n2.txt', null), b.getPublicUrl('n.txt', null), await b.createSignedUploadUrl('n3.txt', null),
        ].map((r) => r.error?.message ?? 'ok'),
        upsertText: (await b.upload('n.txt', 'again', { upsert: 'true' })).error,
        limitText: (await b.list('', { limit: '1' })).data?.length,
        listNumber: (await b.list(5)).error?.message,
        signsText: (await b.createSignedUrls('n.txt', 60)).error?.message,
        bucketThrows: await caught(() => storage.from(bucket).throwOnError().download('missing')),
        bucketReturns: (await storage.from(bucket).download('missing')).error?.error,
        storageThrows: await caught(() => storage.throwOnError().getBucket('no-such-bucket')),
        storageReturns: (await storage.getBucket('no-such-bucket')).error?.error,
      });
    }
    return json({ error: 'not found' }, 404);
  },
};
