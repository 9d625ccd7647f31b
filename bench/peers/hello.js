export default {
  async fetch(request) {
    return Response.json({ hello: 'world' });
  },
};
