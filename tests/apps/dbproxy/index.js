// Replays a query-builder chain sent as JSON, so tests drive the real SDK:
//   POST /chain {"chain": [["from", "notes"], ["select", "id"], ["eq", "owner", "u1"]]}
import { db } from 'fazt';

// {"$bigint": "12"} in an argument is the BigInt 12n, which JSON cannot carry.
const revive = (arg) => {
  if (Array.isArray(arg)) return arg.map(revive);
  if (arg && typeof arg === 'object') {
    return '$bigint' in arg ? BigInt(arg.$bigint) : Object.fromEntries(Object.entries(arg).map(([k, v]) => [k, revive(v)]));
  }
  return arg;
};

function build(chain) {
  let target = db;
  for (const [method, ...args] of chain) {
    if (typeof target[method] !== 'function') throw new Error(`no method ${method}`);
    target = target[method](...args.map(revive));
  }
  return target;
}

export default {
  async fetch(request) {
    const { pathname } = new URL(request.url);
    const body = request.method === 'POST' ? await request.json() : {};
    if (pathname === '/chain') return Response.json(await build(body.chain));
    if (pathname === '/batch') {  // a chain that is no list goes in as it is (a bad batch element)
      return Response.json(await db.batch(body.chains.map((c) => (Array.isArray(c) ? build(c) : c))));
    }
    if (pathname === '/throw') {
      try {
        await build(body.chain).throwOnError();
        return Response.json({ thrown: false });
      } catch (e) {
        return Response.json({ thrown: true, name: e.name, code: e.code, message: e.message });
      }
    }
    if (pathname === '/walk') {
      // Every page of a keyset walk, following each reply's cursor.
      const pages = [];
      let cursor;
      for (;;) {
        let q = build(body.chain);
        if (cursor) q = q.after(cursor);
        const { data, error, cursor: next } = await q;
        if (error) return Response.json({ error }, { status: 400 });
        pages.push(data.map((d) => d.id));
        if (!next) break;
        cursor = next;
      }
      return Response.json(pages);
    }
    return new Response('not found', { status: 404 });
  },
};
