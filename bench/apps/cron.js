// The component every app of the cron bench shares: a trivial fetch, and a scheduled
// handler that writes one log line per execution (the exactly-once check counts them).
export default {
  async fetch() {
    return Response.json({ hello: 'world' });
  },
  async scheduled(event, ctx) {
    console.log(`${ctx.app} ${event.name} ${event.scheduledTime}`);
  },
};
