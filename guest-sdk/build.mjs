#!/usr/bin/env node
// Builds an app's JS into a component of the fazt:host `app` world:
//   node build.mjs ENTRY.js OUT.wasm [--wit DIR] [--cron NAME=FILE ...]
// Bundles the app with the SDK (esbuild), then componentizes it with
// StarlingMonkey (componentize-js); writes OUT.wasm and OUT.wasm.map, the
// bundle's source map (its paths relative to the folder node runs in, the
// app's). Outbound `http` stays disabled: apps reach the network only through
// the host's allow-listed imports. `random` and `clocks` stay enabled so every
// instance gets fresh entropy and the real time.
import { build } from 'esbuild';
import { builtinModules, register, SourceMap } from 'node:module';
import { existsSync } from 'node:fs';
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { dirname, join, resolve, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';

const sdk = dirname(fileURLToPath(import.meta.url));

// Changes to the JS bindings componentize-js generates, made before they are
// snapshotted (bindings-hook.mjs hands them over): two repairs,
// - they copy every list or string argument of an import into memory from
//   cabi_realloc and never free it: a handler that sent 100 MiB through
//   send-body kept 100 MiB more of its memory limit. Each import call is
//   followed here by the frees of its arguments (the host has copied them);
// - they measure a string's UTF-8 length in an interpreted loop, a character
//   at a time (a 1 MiB JSON document took 240 ms to reach the host): the
//   engine's native encoder does it here;
// and a build-time request through the fetch export (warmUpExports).
function rewriteBindings(js) {
  return warmUpExports(fastUtf8Arguments(freeImportArguments(js)));
}

function freeImportArguments(js) {
  let freed = 0;
  const out = js.replace(/\nfunction import_[\w$]+\([^)]*\) \{[\s\S]*?\n\}\n/g, (fn) => {
    const frees = [];
    for (const [, ptr, align, size] of fn.matchAll(/var (ptr\d+) = \$realloc\(0, 0, (\d+), ([^;]+)\);/g)) {
      frees.push(`if ((${size}) !== 0) $dealloc(${ptr}, ${size}, ${align});`);
    }
    for (const [, ptr, len] of fn.matchAll(/var (ptr\d+)\s*=\s*encodeRes\.ptr;\s*var (len\d+)\s*=\s*encodeRes\.len;/g)) {
      frees.push(`if (${len} !== 0) $dealloc(${ptr}, ${len}, 1);`);
    }
    if (!frees.length) return fn;
    return fn.replace(/^(\s*)((?:ret = )?\$import_[\w$]+\([^;]*\);)$/m, (line, indent, call) => {
      freed += frees.length;
      return `${indent}${call}\n${indent}${frees.join(' ')}`;
    });
  });
  if (!freed) throw new Error('componentize-js laid out its import bindings differently: update freeImportArguments in guest-sdk/build.mjs');
  return out;
}
// Serves one request at build time through the fetch export, once the bindings
// are bound, so that the snapshot holds what the engine creates on a first
// request (see the warm-up in src/runtime.js, which answers it with a built-in
// app). A warm-up that fails leaves only a slower first call per instance.
const BIND_EXPORTS = 'function bindExports(sourceName) {';
const WARM_UP_REQUEST = JSON.stringify({
  method: 'GET', url: 'http://warm-up/?q=1', headers: [['host', 'warm-up']], requestId: '', hasBody: false, app: '', warmUp: true,
});

function warmUpExports(js) {
  if (!js.includes(BIND_EXPORTS) || !js.includes('function export_handler_0_1_0$fetch(')) {
    throw new Error('componentize-js binds its exports differently: update warmUpExports in guest-sdk/build.mjs');
  }
  return js.replace(BIND_EXPORTS, `function bindExports(sourceName) {
    bindExportsOnly(sourceName);
    try {
      const { ptr, len } = _utf8AllocateAndEncode(${JSON.stringify(WARM_UP_REQUEST)}, $realloc, $memory);
      export_handler_0_1_0$fetch(ptr, len, $realloc(0, 0, 4, 8)).catch(() => {});
    } catch {}
  }
  function bindExportsOnly(sourceName) {`);
}

const UTF8_ENCODE = 'function _utf8AllocateAndEncode(s, realloc, memory) {';

function fastUtf8Arguments(js) {
  const start = js.indexOf(UTF8_ENCODE);
  const end = js.indexOf('\n}\n', start);
  if (start < 0 || end < 0) throw new Error('componentize-js encodes strings differently: update fastUtf8Arguments in guest-sdk/build.mjs');
  return `${js.slice(0, start)}${UTF8_ENCODE}
  if (typeof s !== 'string') throw new TypeError('expected a string, received [' + typeof s + ']');
  if (s.length === 0) return { ptr: 1, len: 0 };
  const bytes = TEXT_ENCODER_UTF8.encode(s);
  const ptr = realloc(0, 0, 1, bytes.length);
  new Uint8Array(memory.buffer, ptr, bytes.length).set(bytes);
  return { ptr, len: bytes.length };${js.slice(end)}`;
}

globalThis.faztRewriteBindings = rewriteBindings;
register('./bindings-hook.mjs', import.meta.url);
const { componentize } = await import('@bytecodealliance/componentize-js');
const args = process.argv.slice(2);
const witAt = args.indexOf('--wit');
const wit = resolve(witAt >= 0 ? args.splice(witAt, 2)[1] : join(sdk, '..', 'wit'));
// Cron files of fazt.json: each default export is registered under its entry's name.
const crons = [];
for (let at; (at = args.indexOf('--cron')) >= 0; ) {
  const spec = args.splice(at, 2)[1] ?? '';
  const eq = spec.indexOf('=');
  crons.push([spec.slice(0, eq), resolve(spec.slice(eq + 1))]);
}
const [entry, out] = args;
if (!entry || !out) {
  console.error('usage: node build.mjs ENTRY.js OUT.wasm [--wit DIR] [--cron NAME=FILE ...]');
  process.exit(2);
}

function step(message) {
  process.stderr.write(`progress: ${message}\n`);
}

// The bundle's source map: the app's files by their path in the app folder, the
// SDK's as guest-sdk/src/..., which (with the generated entry) ignoreList marks
// as not the app's own, so the host leaves their frames out of logged stacks.
const BUNDLE = 'app.js';
const ENTRY_NAME = '<fazt entry>';

function sourceMap(json, metafile) {
  const map = JSON.parse(json);
  map.x_fazt_inputs = bundleInputs(metafile);
  map.ignoreList = [];
  map.sources = map.sources.map((url, i) => {
    const source = decodeURIComponent(url); // esbuild writes them as URLs: '<fazt entry>' as '%3Cfazt entry%3E'
    const path = resolve(process.cwd(), source);
    const ofSdk = path.startsWith(sdk + sep);
    if (ofSdk || source === ENTRY_NAME) map.ignoreList.push(i);
    return ofSdk ? relative(dirname(sdk), path).split(sep).join('/') : source;
  });
  return map;
}

// Every file of the app's the bundle was resolved from, code or not: the sources of the map miss a module
// that only re-exports and the package.json files that chose a package's entry. The host's build cache
// hashes these (paths from the working folder, the app's own).
function bundleInputs(metafile) {
  const files = new Set();
  for (const input of Object.keys(metafile.inputs)) {
    const path = resolve(process.cwd(), input);
    if (path.startsWith(sdk + sep) || !existsSync(path)) continue; // the SDK's, the generated entry
    files.add(input);
    // Its package's package.json, and in node_modules every one from the module up to the package's root
    // (a symlinked workspace package is named by its real path, outside node_modules).
    const parts = input.split('/');
    const at = parts.lastIndexOf('node_modules');
    const root = at < 0 ? null : parts.slice(0, at + (parts[at + 1]?.startsWith('@') ? 3 : 2)).join('/');
    for (let folder = dirname(input); ; folder = dirname(folder)) {
      const found = existsSync(join(folder, 'package.json'));
      if (found) files.add(join(folder, 'package.json'));
      if (root === null ? found : folder.length <= root.length) break;
      if (folder === dirname(folder)) break; // '.', or '..' and above
    }
  }
  return [...files].sort();
}

// `app.js:L:C` (the bundle, as the engine names it) -> the original FILE:L:C.
function originalPositions(text, map) {
  const lookup = new SourceMap(map);
  return text.replace(/(?:[^\s@()]*\/)?app\.js:(\d+):(\d+)/g, (whole, line, column) => {
    const found = lookup.findEntry(Number(line) - 1, Number(column) - 1);
    if (!found?.originalSource) return whole; // between mapped code
    return `${found.originalSource}:${found.originalLine + 1}:${found.originalColumn + 1}`;
  });
}

// The message of a failed snapshot, for the app's author: wizer's own line and the engine's note on
// the rejection that follows every top-level throw go; the SDK's frames leave the stack, and an error
// thrown inside the SDK (a top-level Math.random()) is placed where the app called it.
function describeFailure(text) {
  const where = (frame) => frame.trim().slice(frame.trim().lastIndexOf('@') + 1);
  const notApps = (frame) => /^(guest-sdk\/|<fazt entry>)/.test(where(frame));
  const isFrame = (line) => /^\s+\S*@\S+:\d+:\d+$/.test(line);
  const lines = text.split('\n').filter(
    (l) => !/^(Failed to initialize component|Additionally, some promises were rejected|Promise rejected but never handled)/.test(l),
  );
  const appFrame = lines.find((l) => isFrame(l) && !notApps(l));
  return lines
    .filter((l) => !(isFrame(l) && notApps(l)))
    .map((l) => (appFrame && !isFrame(l) ? l.replace(/^(guest-sdk\/|<fazt entry>)\S*:\d+:\d+ /, `${where(appFrame)} `) : l))
    .filter((l, i, all) => !(l === 'Stack:' && !isFrame(all[i + 1] ?? '')))
    .join('\n');
}

const entryPath = resolve(entry);
step(`bundling ${relative(process.cwd(), entryPath) || entryPath}`);
let bundle;
let map;
try {
  const result = await build({
    stdin: {
      contents: [
        // The SDK's runtime first: its console, timers and build-time guards are in place for the app's top level.
        `import { handlerFor } from ${JSON.stringify(join(sdk, 'src', 'runtime.js'))};`,
        `import app from ${JSON.stringify(entryPath)};`,
        ...crons.map(([, file], i) => `import cron${i} from ${JSON.stringify(file)};`),
        `export const handler = handlerFor(app, {${crons.map(([name], i) => `${JSON.stringify(name)}: cron${i}`).join(', ')}});`,
      ].join('\n'),
      resolveDir: dirname(entryPath),
      sourcefile: ENTRY_NAME,
    },
    outfile: join(process.cwd(), BUNDLE), // not written: it places the map's paths
    sourcemap: 'external',
    sourcesContent: false,
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    // As wrangler bundles for Workers: a package's browser or module build, else its main file.
    mainFields: ['browser', 'module', 'main'],
    conditions: ['workerd', 'worker', 'browser'],
    target: 'es2022',
    write: false,
    metafile: true,
    logLevel: 'silent',
    external: ['fazt:host/*'],
    alias: { fazt: join(sdk, 'src', 'index.js') },
  });
  bundle = result.outputFiles.find((f) => f.path.endsWith('.js')).text;
  map = sourceMap(result.outputFiles.find((f) => f.path.endsWith('.map')).text, result.metafile);
} catch (e) {
  for (const err of e.errors ?? []) {
    const loc = err.location;
    // The generated entry imports each module's default export: name the module that lacks one.
    const missing = loc?.file === ENTRY_NAME && /^No matching export in "(.+)" for import "default"$/.exec(err.text);
    if (missing) {
      const file = resolve(missing[1]); // esbuild names it from the working folder
      const shown = relative(dirname(entryPath), file);
      const cron = crons.find(([, f]) => f === file);
      console.error(cron
        ? `error: cron entry '${cron[0]}': ${shown} has no default export: export default a function (event, ctx)`
        : `error: ${shown} has no default export: export default { async fetch(request, ctx) { ... } }`);
      continue;
    }
    const where = loc ? `${loc.file}:${loc.line}:${loc.column + 1}: ` : '';
    const builtin = /^Could not resolve "(?:node:)?([^"/]+)/.exec(err.text);
    const hint = builtin && builtinModules.includes(builtin[1])
      ? ' (Node.js modules do not exist in the sandbox: use the web APIs and fazt\'s imports)' : '';
    console.error(`error: ${where}${err.text}${hint}${loc ? `\n    ${loc.lineText}` : ''}`);
  }
  if (!e.errors) console.error(`error: ${e.message}`);
  process.exit(1);
}

step('componentizing (StarlingMonkey + wizer snapshot)');
const work = await mkdtemp(join(tmpdir(), 'fazt-build-'));
try {
  const source = join(work, BUNDLE);
  await writeFile(source, bundle);
  const { component } = await componentize({
    sourcePath: source,
    witPath: wit,
    worldName: 'app',
    disableFeatures: ['http', 'fetch-event', 'stdio'],
  });
  await writeFile(out, component);
  await writeFile(`${out}.map`, JSON.stringify(map));
  step(`wrote ${out} (${(component.byteLength / 1048576).toFixed(1)} MiB)`);
} catch (e) {
  console.error(`error: ${describeFailure(originalPositions(String(e.message ?? e), map))}`);
  process.exit(1);
} finally {
  await rm(work, { recursive: true, force: true });
}
