// Where a request's time goes: runs one request kind in a loop against the
// hub or the floor on bare workerd and records the isolate's V8 CPU
// profile through workerd's inspector, then prints the functions with the
// most self time (JavaScript glue, wasm functions by name, the runtime's
// builtins) and the profile's share that was idle.
//
//   node bench/profile.mjs [--system hub|floor] [--kind 304|200|publish] [--secs 5] [--concurrency 8] [--top 30] [--out file.cpuprofile]
//   node bench/profile.mjs [--system hub|floor] --loadgen 'fanout --transport ws --subs 1000 --rate 50 --secs 10'
//   node bench/profile.mjs --heap [--system hub|floor] [--kind …|--loadgen '…']
//
// With --loadgen the load is bench/loadgen's scenario (built by
// bench/run.sh), and the times are per published message for fan-out and
// publish scenarios, per request otherwise.
//
// A sampling profile sees only the isolate's thread: the runtime's C++ off
// that thread (network, SQLite I/O) shows as idle. Compare two systems'
// profiles side by side, never absolute times across runs.
//
// --heap records V8's sampling heap profile instead (every allocation on
// the JavaScript heap, those collected since included): bytes allocated
// per request or message, by the function that allocated them. What the
// runtime's own code allocates is charged to the JavaScript function that
// called into it (a WebSocket `send` to the loop that calls it). The
// allocation rate sets how often V8 collects garbage, and its pauses are
// where a fan-out's p99 lives (README, issue 19's ninth pass).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { startWorkerdHub } from '../scripts/launch/workerd.mjs';
import { freePort } from '../scripts/launch/ports.mjs';
import * as floor from './floor/launch.mjs';
import { HUB_BENCH_VARS, requestKinds, runLoadgen } from './harness.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const system = opt('system', 'hub');
const kind = opt('kind', '304');
const secs = Number(opt('secs', 5));
const top = Number(opt('top', 30));
const out = opt('out', null);
const loadgenArgs = opt('loadgen', null);
const heap = args.includes('--heap');
// What is recorded: the CPU profile, or (--heap) the allocation profile.
// `setUp`: the inspector calls that come first, each [method, params].
const recorder = heap
  ? {
      setUp: [['HeapProfiler.enable']],
      start: ['HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true }],
      stop: 'HeapProfiler.stopSampling',
    }
  : {
      setUp: [['Profiler.enable'], ['Profiler.setSamplingInterval', { interval: 100 }]],
      start: ['Profiler.start'],
      stop: 'Profiler.stop',
    };
// Requests in flight at once (bench/perf.mjs says why 1 is worth a look).
const CONCURRENCY = Number(opt('concurrency', 8));

/**
 * Runs the load generator on `url`; calls `onPublishing` when a fan-out
 * run has its subscribers and starts publishing (at once for other
 * scenarios) and `onPublished` when it has published its last message;
 * resolves with its JSON result.
 */
async function profiledLoadgen(url, pid, onPublishing, onPublished) {
  const argv = [...loadgenArgs.split(/\s+/), '--system', system, '--url', url, '--pid', pid, '--label', 'profile'];
  // Fan-out and publish mark their measured window on stderr.
  if (!/^(fanout|publish)\b/.test(loadgenArgs)) onPublishing();
  const result = await runLoadgen(argv, {
    onStderr: (text) => {
      if (text.includes('subscribed: publishing')) onPublishing();
      else if (text.includes('published: draining')) onPublished();
      else process.stderr.write(text);
    },
  });
  if (result.error) throw new Error(result.error);
  return result;
}

const dir = mkdtempSync(join(tmpdir(), 'profile-'));
const port = await freePort();
const inspectorPort = await freePort();
const extraArgs = [`--inspector-addr=127.0.0.1:${inspectorPort}`];
const server =
  system === 'floor'
    ? await floor.start({ port, storageDir: join(dir, 'do'), extraArgs })
    : await startWorkerdHub({ port, stateDir: join(dir, 'do'), vars: HUB_BENCH_VARS, extraArgs });
const room = `${server.url}/rooms/profile`;

try {
  const once = (await requestKinds(room))[kind];
  if (!once) throw new Error(`unknown --kind ${kind}`);
  // Warm the isolate's JIT before recording.
  for (let i = 0; i < 500; i++) await once();

  const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json/list`)).json();
  const target = targets.find((t) => t.webSocketDebuggerUrl) ?? targets[0];
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  let nextId = 0;
  const pending = new Map();
  ws.on('message', (raw) => {
    const msg = JSON.parse(raw);
    if (msg.id !== undefined && pending.has(msg.id)) {
      pending.get(msg.id)(msg);
      pending.delete(msg.id);
    }
  });
  const call = (method, params = {}) =>
    new Promise((resolve, reject) => {
      const id = ++nextId;
      const timer = setTimeout(() => reject(new Error(`${method}: no answer in 30 s`)), 30_000);
      pending.set(id, (msg) => {
        clearTimeout(timer);
        msg.error ? reject(new Error(`${method}: ${msg.error.message}`)) : resolve(msg.result);
      });
      ws.send(JSON.stringify({ id, method, params }));
    });

  for (const step of recorder.setUp) await call(...step);
  let requests = 0;
  let stopped = null;
  if (loadgenArgs) {
    // Fan-out and publish are profiled from the first publish to the
    // last: connecting and closing are not part of what a message costs.
    let started;
    const result = await profiledLoadgen(
      server.url,
      server.pid,
      () => (started ??= call(...recorder.start)),
      () => (stopped ??= started.then(() => call(recorder.stop))),
    );
    await started;
    console.log(JSON.stringify(result).slice(0, 600));
    requests = result.acked ?? result.published ?? result.sent ?? 1;
  } else {
    await call(...recorder.start);
    const deadline = Date.now() + secs * 1000;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (Date.now() < deadline) {
          await once();
          requests++;
        }
      }),
    );
  }
  const { profile } = await (stopped ?? call(recorder.stop));
  ws.close();
  if (out) writeFileSync(out, JSON.stringify(profile));
  const what = loadgenArgs ? `loadgen ${loadgenArgs}` : kind;
  if (heap) reportAllocations(profile, requests, what);
  else reportSelfTime(profile, requests, what);
} finally {
  await server.stop();
  await sleep(50);
  rmSync(dir, { recursive: true, force: true });
}

/** A profile node's function, file and line. */
function frameName(f) {
  const file = f.url ? f.url.split('/').pop() : '';
  return `${f.functionName || '(anonymous)'} ${file}${f.url ? `:${f.lineNumber + 1}` : ''}`;
}

/** Prints the `top` largest of `totals` (name -> amount), each as `per` formats it. */
function printTop(totals, per) {
  const rows = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  for (const [name, n] of rows) console.log(`${per(n)}  ${name}`);
}

/** CPU profile: self time per function, from the samples' time deltas. */
function reportSelfTime(profile, requests, what) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    total += dt;
    const key = frameName(byId.get(id).callFrame);
    selfUs.set(key, (selfUs.get(key) ?? 0) + dt);
  });
  const idle = selfUs.get('(idle) ') ?? 0;
  const busy = total - idle;
  selfUs.delete('(idle) ');
  console.log(`${system} ${what}: ${requests} requests/messages; isolate busy ${(busy / 1000).toFixed(0)} ms = ${(busy / requests).toFixed(1)} µs each`);
  printTop(selfUs, (us) => `${((100 * us) / busy).toFixed(1).padStart(5)}%  ${(us / requests).toFixed(2).padStart(7)} µs each`);
}

/** Heap profile: bytes allocated per function (each node's self size, summed by name). */
function reportAllocations(profile, requests, what) {
  const bytes = new Map();
  let total = 0;
  const walk = (node) => {
    const key = frameName(node.callFrame);
    bytes.set(key, (bytes.get(key) ?? 0) + node.selfSize);
    total += node.selfSize;
    node.children.forEach(walk);
  };
  walk(profile.head);
  console.log(`${system} ${what}: ${requests} requests/messages; ${(total / requests).toFixed(0)} bytes allocated each`);
  printTop(bytes, (n) => `${((100 * n) / total).toFixed(1).padStart(5)}%  ${(n / requests).toFixed(0).padStart(7)} B each`);
}
