// Side-by-side A/B of hub builds against the floor, for one loadgen
// scenario, in alternating rounds so that a noisy machine weighs on every
// variant alike. Prints each round and the median per variant.
//
//   node bench/ab.mjs --builds name=dir[+VAR=value…],… [--floor] [--null] [--reuse] [--warm-runs N] [--threads] [--gc] [--rounds 3] -- <loadgen args…>
//
// e.g. node bench/ab.mjs --builds old=build-old,new=build --floor -- cost304 --concurrency 16 --secs 3
// (build-old: a copy of build/ made at an earlier commit)
//
// --reuse starts each system once, warms it up once, and then alternates
// the measured runs on the running servers: a round costs only its
// measurement, so many short rounds fit where a few long ones did, and
// the systems' runs in one round are seconds apart: on this noisy host
// the per-round ratios to the floor spread less (each run of the load
// generator uses a room of its own).
//
// --warm-runs N runs the measured scenario N times more, unrecorded, after
// the common warm-up of each system: V8 moves a function to its optimizing
// tier only after it has run for a while, and the common warm-up (polls,
// then a WebSocket fan-out) runs no publish at all. Every system gets the
// same runs, so the floor's JavaScript warms up as the hub's WebAssembly
// does.
//
// --gc runs every system with V8's `--trace-gc-nvp` and prints, once the
// systems have stopped, each one's garbage-collection pauses by kind
// (count, mean, longest, how many of 8 ms or more) and the phases that
// take most of a pause. For fan-out and publish, only the pauses inside
// the measured runs' publishing windows count (the load generator marks
// them; the connect phase, where the hub announces every join, is left
// out). A pause is placed by V8's clock since the isolate started,
// counted from when the process was spawned: that places it early by at
// most the process's start-up (spawn to listening), so each window's end
// is moved that much earlier and no pause from after a window (the
// subscribers leaving) is counted in it. Other scenarios count the
// process's whole life, warm-up included. At a fan-out's p99 a handful
// of pauses is the tail (README, "Benchmarks").
//
// --threads adds, per run, the share of the server process's CPU spent on
// its busiest thread (`main_share`: workerd runs the isolate, its event
// loop, HTTP and SQLite on one thread; V8's helper threads compile and
// collect garbage), read from /proc before and after the run.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startWorkerdHub } from '../scripts/launch/workerd.mjs';
import { freePort } from '../scripts/launch/ports.mjs';
import * as floor from './floor/launch.mjs';
import * as nullWorker from './null/launch.mjs';
import { cpuMs, HUB_BENCH_VARS, runLoadgen, warmUp } from './harness.mjs';

const argv = process.argv.slice(2);
const sep = argv.indexOf('--');
const own = sep >= 0 ? argv.slice(0, sep) : argv;
const loadgenArgs = sep >= 0 ? argv.slice(sep + 1) : ['cost304', '--concurrency', '16', '--secs', '3'];
const opt = (name, dflt) => (own.includes(`--${name}`) ? own[own.indexOf(`--${name}`) + 1] : dflt);
const rounds = Number(opt('rounds', 3));
const warmRuns = Number(opt('warm-runs', 0));
const gcTrace = own.includes('--gc');
const v8Flags = gcTrace ? ['--trace-gc-nvp'] : [];

// `name=dir` or `name=dir+VAR=value+…`: settings on top of the benchmark's.
const variants = (opt('builds', 'hub=build') ?? '').split(',').map((spec) => {
  const [named, ...settings] = spec.split('+');
  const [name, dir] = named.split('=');
  const vars = { ...HUB_BENCH_VARS, ...Object.fromEntries(settings.map((kv) => kv.split('='))) };
  return {
    name,
    start: (port, stateDir) => {
      process.env.HUB_BUILD_DIR = resolve(dir);
      return startWorkerdHub({ port, stateDir, vars, v8Flags });
    },
    system: 'hub',
  };
});
if (own.includes('--floor')) variants.push({ name: 'floor', start: (port, storageDir) => floor.start({ port, storageDir, v8Flags }), system: 'floor' });
// The runtime's own cost per request (bench/null/: answers 304 at once); it
// speaks no WebSocket, so its warm-up is the polls alone.
if (own.includes('--null')) variants.push({ name: 'null', start: (port, storageDir) => nullWorker.start({ port, storageDir, v8Flags }), system: 'floor', pollsOnly: true });

// The numbers worth comparing, by scenario.
function metrics(r) {
  if (!r || r.error) return {};
  if (r.full_200) return { '200_us': r.full_200.server_cpu_us_per_request, '304_us': r.not_modified_304.server_cpu_us_per_request };
  if (r.cpu_ms_per_1000_requests !== undefined) return { cpu_per_1000: r.cpu_ms_per_1000_requests };
  // CPU per acknowledged publish as well as the rate: on a host that
  // steals time from its guest the rate swings by half between rounds.
  if (r.per_sec !== undefined) {
    const each = r.acked ? { cpu_us_each: (r.server_cpu_ms * 1000) / r.acked } : {};
    const settled = r.subs > 0 ? { settle_s: r.settle_secs } : {};
    return { per_sec: r.per_sec, cpu_ms: r.server_cpu_ms, ...each, ...settled };
  }
  if (r.result?.latency_ms) {
    const l = r.result.latency_ms;
    return { p50: l.p50, p99: l.p99, rate: r.published / r.publish_secs, completeness: r.result.completeness, settle_s: r.settle_secs };
  }
  return { raw: JSON.stringify(r).slice(0, 200) };
}

const all = new Map(variants.map((v) => [v.name, []]));
// --gc: each system's garbage-collection records, by name.
const gcPauses = new Map();

/**
 * V8's `--trace-gc-nvp` records in a server's log (`[pid:isolate] N ms:
 * GC: {…}`, one per collection), each with `at`: `spawnedAt` + N.
 */
function gcRecords(log, spawnedAt) {
  return log
    .split('\n')
    .map((line) => line.match(/\s(\d+) ms: GC: (\{.*\})\s*$/))
    .filter(Boolean)
    .map((m) => ({ ...JSON.parse(m[2]), at: spawnedAt + Number(m[1]) }));
}

/** Prints one system's pauses by kind of collection, and their costliest phases. */
function printGc(name, records) {
  if (records.length === 0) console.log(`gc ${name}: no pauses`);
  const kinds = new Map();
  for (const r of records) {
    if (!kinds.has(r.gc)) kinds.set(r.gc, []);
    kinds.get(r.gc).push(r);
  }
  for (const [kind, rs] of kinds) {
    const pauses = rs.map((r) => r.pause);
    const mean = (key) => rs.reduce((sum, r) => sum + (Number(r[key]) || 0), 0) / rs.length;
    // Phase names are dotted (`scavenge.roots`); the top level is the sum.
    const phases = Object.keys(rs[0])
      .filter((k) => k.includes('.') && !k.startsWith('background') && typeof rs[0][k] === 'number')
      .map((k) => [k, mean(k)])
      .sort((a, b) => b[1] - a[1])
      .slice(0, 4);
    // What a collection had to keep: bytes that survived a scavenge (and
    // those it moved to the old generation), or live after a full one.
    const kept =
      kind === 's'
        ? `, ${(mean('new_space_survived') / 1024).toFixed(0)} KiB survived (${(mean('promoted') / 1024).toFixed(0)} promoted)`
        : `, ${(mean('end_object_size') / 1024).toFixed(0)} KiB live after`;
    console.log(
      `gc ${name} ${kind}: ${rs.length} pauses, mean ${mean('pause').toFixed(2)} ms, longest ${Math.max(...pauses).toFixed(2)}, ` +
        `${pauses.filter((p) => p >= 8).length} of 8 ms or more${kept}; ${phases.map(([k, ms]) => `${k} ${ms.toFixed(2)}`).join(', ')}`,
    );
  }
}

// --gc: the measured runs' publishing windows ([from, to] in ms since
// the epoch), by system name.
const publishingWindows = new Map(variants.map((v) => [v.name, []]));

/** One run of the measured scenario against `v` on `server`. */
function runScenario(v, server, label) {
  let from;
  const onStderr = (text) => {
    if (!gcTrace || label !== 'ab') return;
    if (text.includes('subscribed: publishing')) from = Date.now();
    else if (text.includes('published: draining') && from !== undefined) publishingWindows.get(v.name).push([from, Date.now()]);
  };
  return runLoadgen([...loadgenArgs, '--system', v.system, '--url', server.url, '--pid', server.pid, '--label', label], { onStderr });
}

/** Starts `v` in a fresh state directory and warms it up. */
async function launch(v) {
  const dir = mkdtempSync(join(tmpdir(), 'ab-'));
  const spawnedAt = Date.now();
  const server = await v.start(await freePort(), join(dir, 'do'));
  const startupMs = Date.now() - spawnedAt;
  const stop = async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
    if (gcTrace) {
      // A stopped server's log is whole (scripts/launch/workerd.mjs).
      const records = gcRecords(server.log(), spawnedAt);
      const windows = publishingWindows.get(v.name);
      const inWindow = (r) => windows.some(([from, to]) => r.at >= from && r.at <= to - startupMs);
      gcPauses.set(v.name, windows.length ? records.filter(inWindow) : records);
    }
  };
  const warm = await warmUp(v.system, server, { pollsOnly: v.pollsOnly });
  if (warm?.error) console.error(`warm-up of ${v.name}: ${warm.error}`);
  for (let i = 0; i < warmRuns; i++) {
    const r = await runScenario(v, server, 'warm-up');
    if (r.error) console.error(`warm-up run of ${v.name}: ${r.error}`);
  }
  return { server, stop };
}

/** CPU ms (user + system) of each thread of process `pid`, by thread id. */
function threadCpuMs(pid) {
  const spent = new Map();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      spent.set(tid, cpuMs(pid, tid));
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return spent;
}

/** The busiest thread's share of the CPU spent between `before` and `after`. */
function busiestShare(before, after) {
  const spent = [...after].map(([tid, t]) => t - (before.get(tid) ?? 0));
  const total = spent.reduce((a, b) => a + b, 0);
  return total > 0 ? Math.max(...spent) / total : NaN;
}

/** One measured run of `v` on `server`, recorded as round `round`. */
async function measure(v, server, round) {
  const before = own.includes('--threads') ? threadCpuMs(server.pid) : null;
  const r = await runScenario(v, server, 'ab');
  if (r.error) console.error(`round ${round + 1} ${v.name}: ${r.error}`);
  const m = metrics(r);
  if (before) m.main_share = busiestShare(before, threadCpuMs(server.pid));
  all.get(v.name).push(m);
  console.log(`round ${round + 1} ${v.name}: ${JSON.stringify(m)}`);
}

if (own.includes('--reuse')) {
  const running = [];
  try {
    for (const v of variants) running.push({ v, ...(await launch(v)) });
    for (let round = 0; round < rounds; round++) {
      // Each round starts with the next system, so that no system always
      // runs first, or right after the same one.
      for (let i = 0; i < running.length; i++) {
        const { v, server } = running[(round + i) % running.length];
        await measure(v, server, round);
      }
    }
  } finally {
    for (const { stop } of running) await stop();
  }
} else {
  for (let round = 0; round < rounds; round++) {
    for (const v of variants) {
      const { server, stop } = await launch(v);
      try {
        await measure(v, server, round);
      } finally {
        await stop();
      }
    }
  }
}
for (const [name, records] of gcPauses) printGc(name, records);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};
for (const [name, ms] of all) {
  const keys = Object.keys(ms[0] ?? {});
  console.log(`median ${name}: ${keys.map((k) => `${k}=${Number(median(ms.map((m) => m[k]))).toFixed(1)}`).join(' ')}`);
}
// Each round's ratio to the floor's figure in the same round, and their
// median: a host that drifts between rounds weighs on both sides of a
// ratio alike, where the medians above compare different moments.
const floorRounds = all.get('floor');
if (floorRounds) {
  for (const [name, ms] of all) {
    if (name === 'floor') continue;
    const keys = Object.keys(ms[0] ?? {}).filter((k) => typeof ms[0][k] === 'number' && k !== 'completeness' && k !== 'settle_s');
    const parts = keys.map((k) => {
      const ratios = ms.map((m, i) => m[k] / floorRounds[i]?.[k]).filter(Number.isFinite);
      const sorted = [...ratios].sort((a, b) => a - b);
      const quartile = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
      const spread = sorted.length >= 8 ? ` middle half ${quartile(0.25).toFixed(2)}..${quartile(0.75).toFixed(2)}` : '';
      return `${k}=${median(ratios).toFixed(2)}${spread} (${ratios.map((r) => r.toFixed(2)).join(' ')})`;
    });
    console.log(`per-round ${name}/floor: ${parts.join(' ')}`);
  }
}
