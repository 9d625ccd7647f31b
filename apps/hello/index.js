export default {
  async fetch(request, ctx) {
    const url = new URL(request.url);
    if (url.pathname === '/hello') {
      return Response.json({ hello: 'world', requestId: ctx.requestId });
    }
    return new Response('not found', { status: 404 });
  },
};
