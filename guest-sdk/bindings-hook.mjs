// A Node module hook for build.mjs: it hands the JS bindings componentize-js
// generates to `globalThis.faztRewriteBindings` before they are snapshotted.
const MARKER = 'await writeFile(initializerPath, jsBindings);';

export async function load(url, context, nextLoad) {
  const result = await nextLoad(url, context);
  if (!url.endsWith('/@bytecodealliance/componentize-js/src/componentize.js')) return result;
  const source = String(result.source);
  if (!source.includes(MARKER)) throw new Error(`componentize-js no longer writes its bindings with "${MARKER}": update guest-sdk/bindings-hook.mjs`);
  return { ...result, source: source.replace(MARKER, 'await writeFile(initializerPath, globalThis.faztRewriteBindings(jsBindings));') };
}
