// Bytes in and out of a handler, for the body throughput figures.
export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === '/in') {
      const started = Date.now();
      const body = await request.arrayBuffer();
      return Response.json({ length: body.byteLength, readMs: Date.now() - started });
    }
    if (url.pathname === '/out') {
      const n = Number(url.searchParams.get('n') || 0);
      return new Response(new Uint8Array(n).fill(7), { headers: { 'content-type': 'application/octet-stream' } });
    }
    return new Response('not found', { status: 404 });
  },
};
