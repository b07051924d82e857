// Side-by-side A/B of hub builds against the floor, for one loadgen
// scenario, in alternating rounds so that a noisy machine weighs on every
// variant alike. Prints each round and the median per variant.
//
//   node bench/ab.mjs --builds name=dir[+VAR=value…],… [--floor] [--null] [--reuse] [--warm-runs N] [--threads] [--rounds 3] -- <loadgen args…>
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

// `name=dir` or `name=dir+VAR=value+…`: settings on top of the benchmark's.
const variants = (opt('builds', 'hub=build') ?? '').split(',').map((spec) => {
  const [named, ...settings] = spec.split('+');
  const [name, dir] = named.split('=');
  const vars = { ...HUB_BENCH_VARS, ...Object.fromEntries(settings.map((kv) => kv.split('='))) };
  return {
    name,
    start: (port, stateDir) => {
      process.env.HUB_BUILD_DIR = resolve(dir);
      return startWorkerdHub({ port, stateDir, vars });
    },
    system: 'hub',
  };
});
if (own.includes('--floor')) variants.push({ name: 'floor', start: (port, storageDir) => floor.start({ port, storageDir }), system: 'floor' });
// The runtime's own cost per request (bench/null/: answers 304 at once); it
// speaks no WebSocket, so its warm-up is the polls alone.
if (own.includes('--null')) variants.push({ name: 'null', start: (port, storageDir) => nullWorker.start({ port, storageDir }), system: 'floor', pollsOnly: true });

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

/** One run of the measured scenario against `v` on `server`. */
function runScenario(v, server, label) {
  return runLoadgen([...loadgenArgs, '--system', v.system, '--url', server.url, '--pid', server.pid, '--label', label]);
}

/** Starts `v` in a fresh state directory and warms it up. */
async function launch(v) {
  const dir = mkdtempSync(join(tmpdir(), 'ab-'));
  const server = await v.start(await freePort(), join(dir, 'do'));
  const stop = async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
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
