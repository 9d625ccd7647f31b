// A cron file: its default export runs for the entry that names it.
export default async function (event, ctx) {
  console.log(JSON.stringify({ file: 'tick', event, requestId: ctx.requestId, app: ctx.app }));
}
