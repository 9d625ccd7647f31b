// Adapts a Workers-style module (`export default { fetch }`) to StarlingMonkey's
// fetch event, which componentize-js 0.23 wires to wasi:http/incoming-handler.
// esbuild replaces the `__APP__` import with the user's module when bundling.
import app from '__APP__';

addEventListener('fetch', (event) => {
  event.respondWith(app.fetch(event.request, {}, { waitUntil() {}, passThroughOnException() {} }));
});
