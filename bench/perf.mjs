// Where a request's CPU goes in the whole workerd process: one request kind
// in a loop against the hub and the floor on bare workerd, each recorded
// with Linux `perf` (software clock, every thread of the process), and the
// samples sorted into buckets per request: the kernel, the runtime's C++
// (KJ/Cap'n Proto event loop and I/O, its JavaScript bindings, its Web
// APIs, SQLite, malloc), V8 itself, and the JIT code (the hub's
// WebAssembly, named by V8's `--perf-basic-prof` map, and JavaScript).
//
//   node bench/perf.mjs [--kind 304|200|publish] [--subs N [--no-deflate]] [--secs 5] [--warm 3] [--concurrency 8] [--systems hub,floor] [--top 20]
//
// `--subs N` opens N WebSocket subscribers on the room first (they read
// and drop every frame), so a publish's CPU includes its fan-out; they
// offer permessage-deflate, as browsers do, unless `--no-deflate` (local
// workerd accepts it, and then compresses every frame for every socket).
// `--warm S`: seconds of the same loop, unrecorded, before recording
// (V8 moves a WebAssembly function out of its baseline tier only after
// it has run for a while).
//
// bench/profile.mjs samples the isolate's thread from V8's side, which
// charges a native call's time to whatever JavaScript frame is on top and
// never sees the runtime's C++ outside the isolate lock; this sees all of
// it, with less detail on the JavaScript side. `--top` lists the symbols
// whose time per request differs most between the first two systems.
// Needs `perf` (Debian: linux-perf) and kernel.perf_event_paranoid <= 2.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startWorkerdHub } from '../scripts/launch/workerd.mjs';
import { freePort } from '../scripts/launch/ports.mjs';
import * as floor from './floor/launch.mjs';
import { HUB_BENCH_VARS, requestKinds } from './harness.mjs';
import { openSocket } from '../scripts/clients/ws.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const kind = opt('kind', '304');
const secs = Number(opt('secs', 5));
const systems = opt('systems', 'hub,floor').split(',');
const top = Number(opt('top', 0));
const subs = Number(opt('subs', 0));
const warmSecs = Number(opt('warm', 3));
// The subscribers offer permessage-deflate (as browsers do) unless told not to.
const deflate = !args.includes('--no-deflate');
// Requests in flight at once: 1 exposes each request's fixed costs, which
// requests that overlap share (the runtime's turns, its batched writes).
const CONCURRENCY = Number(opt('concurrency', 8));
const SAMPLES_PER_SEC = 2000;

if (spawnSync('perf', ['--version']).status !== 0) {
  console.error('bench/perf.mjs needs `perf` (Debian: apt-get install linux-perf)');
  process.exit(2);
}

/** Which part of the process a sampled symbol belongs to. */
function bucket(dso, sym) {
  if (dso.includes('kernel')) return 'kernel';
  if (dso.startsWith('[JIT]')) {
    // The map names WebAssembly functions by their Rust paths (and the
    // wasm-bindgen shims); JavaScript functions by name and source.
    const tier = sym.endsWith('-liftoff') ? ' (baseline tier)' : '';
    return (/::|shim|wasm/i.test(sym) ? 'JIT: WebAssembly' : 'JIT: JavaScript') + tier;
  }
  if (/tcmalloc|TCMalloc/.test(sym)) return 'malloc';
  if (sym.startsWith('Builtins_')) return 'V8 builtins';
  if (sym.includes('v8::') || sym.startsWith('_ZN2v8')) return 'V8 runtime, GC, handles';
  if (/sqlite|pcache|btree|Vdbe/i.test(sym)) return 'SQLite';
  if (/jsg|Jsg/.test(sym)) return 'runtime: JS bindings';
  if (sym.includes('workerd::api')) return 'runtime: Web APIs';
  if (/kj::|capnp/.test(sym)) return 'runtime: event loop, I/O';
  if (sym.includes('workerd')) return 'runtime: other';
  if (dso.startsWith('libc')) return 'libc';
  return `other (${dso})`;
}

/** Samples by (dso, symbol) from a `perf record` file. */
function samples(file) {
  const out = spawnSync('perf', ['report', '-i', file, '--sort', 'dso,sym', '--stdio', '-n', '--percent-limit', '0'], {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  }).stdout;
  const rows = [];
  for (const line of out.split('\n')) {
    const m = /^\s*[\d.]+%\s+(\d+)\s+(.+?)\s+\[.\]\s+(.*)$/.exec(line);
    if (m) rows.push({ n: Number(m[1]), dso: m[2].trim(), sym: m[3].trim() });
  }
  if (rows.length === 0) throw new Error(`perf recorded nothing in ${file} (kernel.perf_event_paranoid <= 2?)`);
  return rows;
}

/** Runs `once` from CONCURRENCY loops for `ms`; resolves with how many completed. */
async function loop(once, ms) {
  const until = Date.now() + ms;
  let done = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (Date.now() < until) {
        await once();
        done++;
      }
    }),
  );
  return done;
}

const results = [];
for (const system of systems) {
  const dir = mkdtempSync(join(tmpdir(), 'perf-'));
  const port = await freePort();
  // The map names JIT code for perf; V8's own log, which the map flag
  // turns on, goes nowhere (it would land in the working directory).
  const v8Flags = ['--perf-basic-prof', '--no-logfile-per-isolate', '--logfile=/dev/null'];
  const server =
    system === 'floor'
      ? await floor.start({ port, storageDir: join(dir, 'do'), v8Flags })
      : await startWorkerdHub({ port, stateDir: join(dir, 'do'), vars: HUB_BENCH_VARS, v8Flags });
  const sockets = [];
  try {
    for (let i = 0; i < subs; i++) {
      const ws = openSocket(`${server.url.replace(/^http/, 'ws')}/rooms/perf/ws`, { perMessageDeflate: deflate });
      sockets.push(ws);
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
    }
    const once = (await requestKinds(`${server.url}/rooms/perf`))[kind];
    if (!once) throw new Error(`unknown --kind ${kind}`);
    await loop(once, warmSecs * 1000); // the JIT's hot code compiled before recording
    const file = join(dir, 'perf.data');
    const perf = spawn('perf', ['record', '-q', '-e', 'cpu-clock', '-F', String(SAMPLES_PER_SEC), '-p', String(server.pid), '-o', file], {
      stdio: 'ignore',
    });
    const exited = new Promise((resolve) => perf.on('exit', resolve));
    await new Promise((resolve) => setTimeout(resolve, 300)); // perf attached
    const done = await loop(once, secs * 1000);
    perf.kill('SIGINT');
    await exited;
    const usEach = (n) => (n * 1e6) / SAMPLES_PER_SEC / done;
    const buckets = new Map();
    const symbols = new Map();
    for (const { n, dso, sym } of samples(file)) {
      const b = bucket(dso, sym);
      buckets.set(b, (buckets.get(b) ?? 0) + usEach(n));
      const key = `${dso} ${sym.slice(0, 100)}`;
      symbols.set(key, (symbols.get(key) ?? 0) + usEach(n));
    }
    results.push({ system, done, buckets, symbols });
    console.log(`${system} ${kind}: ${done} requests in ${secs} s`);
  } finally {
    for (const ws of sockets) ws.terminate();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
    // V8 writes its map as perf-<pid>.map in the system's temporary
    // folder, where perf reads it.
    rmSync(join(tmpdir(), `perf-${server.pid}.map`), { force: true });
  }
}

const names = [...new Set(results.flatMap((r) => [...r.buckets.keys()]))];
const total = (r) => [...r.buckets.values()].reduce((a, b) => a + b, 0);
names.sort((a, b) => (results[0].buckets.get(b) ?? 0) - (results[0].buckets.get(a) ?? 0));
const pad = (s, n) => String(s).padStart(n);
console.log(`\nCPU µs per ${kind} request, by where it was spent`);
console.log(`${'bucket'.padEnd(34)}${results.map((r) => pad(r.system, 10)).join('')}`);
for (const name of names) {
  console.log(`${name.padEnd(34)}${results.map((r) => pad((r.buckets.get(name) ?? 0).toFixed(1), 10)).join('')}`);
}
console.log(`${'total'.padEnd(34)}${results.map((r) => pad(total(r).toFixed(1), 10)).join('')}`);

if (top > 0 && results.length >= 2) {
  const [a, b] = results;
  const keys = [...new Set([...a.symbols.keys(), ...b.symbols.keys()])];
  const diff = (k) => (a.symbols.get(k) ?? 0) - (b.symbols.get(k) ?? 0);
  keys.sort((x, y) => Math.abs(diff(y)) - Math.abs(diff(x)));
  console.log(`\nsymbols that differ most (µs per request, ${a.system} - ${b.system})`);
  for (const k of keys.slice(0, top)) console.log(`${pad(diff(k).toFixed(1), 8)}  ${k}`);
}
