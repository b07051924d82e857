// Side-by-side A/B of hub builds against the floor, for one loadgen
// scenario, in alternating rounds so that a noisy machine weighs on every
// variant alike. Prints each round and the median per variant.
//
//   node bench/ab.mjs --builds name=dir,name=dir [--floor] [--rounds 3] -- <loadgen args…>
//
// e.g. node bench/ab.mjs --builds old=/tmp/old,new=build --floor -- cost304 --concurrency 16 --secs 3
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startWorkerdHub } from '../scripts/launch/workerd.mjs';
import { freePort } from '../scripts/launch/ports.mjs';
import * as floor from './floor/launch.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const LOADGEN = join(here, 'loadgen/target/release/hub-loadgen');
const argv = process.argv.slice(2);
const sep = argv.indexOf('--');
const own = sep >= 0 ? argv.slice(0, sep) : argv;
const loadgenArgs = sep >= 0 ? argv.slice(sep + 1) : ['cost304', '--concurrency', '16', '--secs', '3'];
const opt = (name, dflt) => (own.includes(`--${name}`) ? own[own.indexOf(`--${name}`) + 1] : dflt);
const builds = (opt('builds', 'hub=build') ?? '').split(',').map((b) => b.split('='));
const rounds = Number(opt('rounds', 3));
const vars = { RATE_PER_SEC: '0', MAX_CONNECTIONS_PER_USER: '0', HISTORY_LIMIT: '1000' };

const variants = builds.map(([name, dir]) => ({
  name,
  start: (port, stateDir) => {
    process.env.HUB_BUILD_DIR = resolve(dir);
    return startWorkerdHub({ port, stateDir, vars });
  },
  system: 'hub',
}));
if (own.includes('--floor')) variants.push({ name: 'floor', start: (port, storageDir) => floor.start({ port, storageDir }), system: 'floor' });

function loadgen(args) {
  return new Promise((resolve) => {
    const child = spawn(LOADGEN, args.map(String), { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 240_000);
    child.on('exit', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()));
      } catch {
        resolve(null);
      }
    });
  });
}

// The numbers worth comparing, by scenario.
function metrics(r) {
  if (!r) return {};
  if (r.full_200) return { '200_us': r.full_200.server_cpu_us_per_request, '304_us': r.not_modified_304.server_cpu_us_per_request };
  if (r.cpu_ms_per_1000_requests !== undefined) return { cpu_per_1000: r.cpu_ms_per_1000_requests };
  if (r.per_sec !== undefined) return { per_sec: r.per_sec, cpu_ms: r.server_cpu_ms };
  if (r.result?.latency_ms) {
    const l = r.result.latency_ms;
    return { p50: l.p50, p99: l.p99, rate: r.published / r.publish_secs, completeness: r.result.completeness };
  }
  return { raw: JSON.stringify(r).slice(0, 200) };
}

const all = new Map(variants.map((v) => [v.name, []]));
for (let round = 0; round < rounds; round++) {
  for (const v of variants) {
    const dir = mkdtempSync(join(tmpdir(), 'ab-'));
    const port = await freePort();
    const server = await v.start(port, join(dir, 'do'));
    try {
      // Warm-up, not measured (as bench/run.mjs does).
      await loadgen(['cost304', '--concurrency', 8, '--secs', 2, '--system', v.system, '--url', server.url, '--pid', server.pid, '--label', 'warm-up']);
      const r = await loadgen([...loadgenArgs, '--system', v.system, '--url', server.url, '--pid', server.pid, '--label', 'ab']);
      const m = metrics(r);
      all.get(v.name).push(m);
      console.log(`round ${round + 1} ${v.name}: ${JSON.stringify(m)}`);
    } finally {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }
}
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};
for (const [name, ms] of all) {
  const keys = Object.keys(ms[0] ?? {});
  console.log(`median ${name}: ${keys.map((k) => `${k}=${Number(median(ms.map((m) => m[k]))).toFixed(1)}`).join(' ')}`);
}
