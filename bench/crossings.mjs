// Counts the boundary crossings of one request kind: every call from the
// hub's WebAssembly into JavaScript (each wasm-bindgen import), per
// request. Runs a copy of the built Worker whose imports are wrapped with
// counters, on bare workerd, and prints the calls per request by import.
//
//   node bench/crossings.mjs [--kind publish|304|200] [--requests 200] [--strings]
//
// With --strings it also counts the strings copied out of the module's
// memory (each one a TextDecoder pass), by their first 48 characters.
//
// A crossing costs ~0.5-1 µs plus what it copies (strings are decoded
// with TextDecoder on the way out): a count, not a time. The copy is made
// in a temporary folder; build/ is left as it is.
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildDir } from '../scripts/launch/paths.mjs';
import { startWorkerdHub } from '../scripts/launch/workerd.mjs';
import { HUB_BENCH_VARS, requestKinds } from './harness.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : dflt);
const kind = opt('kind', 'publish');
const requests = Number(opt('requests', 200));
const strings = args.includes('--strings');
const COUNTS_PATH = '/__crossings';

// The glue instantiates the module with `__wbg_get_imports()` (at start,
// and again after a reset): wrap every function it hands the module.
const INSTANCE = 'new WebAssembly.Instance(wasmModule,__wbg_get_imports())';
const COUNTED = `new WebAssembly.Instance(wasmModule,(()=>{const imports=__wbg_get_imports();const counts=globalThis.__crossings={};for(const [name,module] of Object.entries(imports)){const wrapped={...module};imports[name]=wrapped;for(const [key,f] of Object.entries(module))if(typeof f==='function')wrapped[key]=function(...a){counts[key]=(counts[key]||0)+1;return f.apply(this,a)}}return imports})())`;
// Every string the glue reads out of the module's memory.
const DECODE = 'function decodeText(bytes){return cachedTextDecoder.decode(bytes)}';
const DECODE_COUNTED = `function decodeText(bytes){const s=cachedTextDecoder.decode(bytes),c=globalThis.__crossings,k='string '+JSON.stringify(s.slice(0,48));c[k]=(c[k]||0)+1;return s}`;
// The Worker answers COUNTS_PATH with the counts so far, and resets them.
const FETCH = 'fetch(request,env,ctx){';
const FETCH_COUNTED = `fetch(request,env,ctx){if(new URL(request.url).pathname==='${COUNTS_PATH}'){const c=globalThis.__crossings;const r=new Response(JSON.stringify(c));for(const k of Object.keys(c))delete c[k];return r}`;

const dir = mkdtempSync(join(tmpdir(), 'crossings-'));
const source = readFileSync(join(buildDir(), 'index.js'), 'utf8');
if (!source.includes(INSTANCE) || !source.includes(FETCH) || (strings && !source.includes(DECODE))) {
  throw new Error(`${join(buildDir(), 'index.js')} does not have the shape this tool patches (a build of scripts/build.sh, names kept)`);
}
const patched = source.replaceAll(INSTANCE, COUNTED).replace(FETCH, FETCH_COUNTED);
writeFileSync(join(dir, 'index.js'), strings ? patched.replace(DECODE, DECODE_COUNTED) : patched);
copyFileSync(join(buildDir(), 'index_bg.wasm'), join(dir, 'index_bg.wasm'));
process.env.HUB_BUILD_DIR = dir;

const hub = await startWorkerdHub({ vars: HUB_BENCH_VARS });
try {
  const one = (await requestKinds(`${hub.url}/rooms/crossings`))[kind];
  if (!one) throw new Error(`unknown --kind ${kind}`);
  await fetch(`${hub.url}${COUNTS_PATH}`).then((r) => r.text());
  for (let i = 0; i < requests; i++) await one();
  const counts = await fetch(`${hub.url}${COUNTS_PATH}`).then((r) => r.json());
  const rows = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  let total = 0;
  let copied = 0;
  for (const [name, n] of rows) {
    if (name.startsWith('string ')) copied += n / requests;
    else total += n / requests;
    console.log(`${(n / requests).toFixed(2).padStart(7)}  ${name}`);
  }
  console.log(`${total.toFixed(2).padStart(7)}  crossings per ${kind} (${requests} requests)`);
  if (strings) console.log(`${copied.toFixed(2).padStart(7)}  strings copied out per ${kind}`);
} finally {
  await hub.stop();
  rmSync(dir, { recursive: true, force: true });
}
