// Exercises the cron contract from inside the sandbox; tests/test_cron.py reads what it logs.
// Entries without a file land in `scheduled`, which acts on the entry's name:
//   boom*  throws          hang*  loops until the timeout       bomb*  exhausts memory
//   slow*  busy for 1.5 s  crash* busy for 8 s on attempt 1 (the test kills the host meanwhile)
//   nap*   waits 60 s for a timer (the entry's timeout stops it)
//   late*  rejects a ctx.waitUntil promise    anything else logs its event and returns.
import { storage } from 'fazt';

function busy(ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {}
}

export default {
  async fetch() {
    return Response.json({ ok: true });
  },
  async scheduled(event, ctx) {
    const url = storage.from('files').getPublicUrl('k').data.publicUrl; // no request: a path under the app
    console.log(JSON.stringify({ handler: 'scheduled', event, requestId: ctx.requestId, env: ctx.env, url }));
    const name = event.name;
    if (name.startsWith('boom')) throw new Error(`boom at ${event.scheduledTime} attempt ${event.attempt}`);
    if (name.startsWith('hang')) for (;;) {}
    if (name.startsWith('bomb')) {
      const hoard = [];
      for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
    }
    if (name.startsWith('slow')) busy(1500);
    if (name.startsWith('nap')) await new Promise((resolve) => setTimeout(resolve, 60000));
    if (name.startsWith('crash') && event.attempt === 1) busy(8000);
    if (name.startsWith('late')) ctx.waitUntil(Promise.reject(new Error('late rejection')));
  },
};
