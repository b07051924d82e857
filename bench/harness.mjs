// What bench/run.mjs, bench/ab.mjs, bench/profile.mjs and
// bench/crossings.mjs share: the hub's benchmark settings, the one way to
// run the load generator (bench/loadgen/, built by bench/run.sh), the
// warm-up, the single requests the profiler and the crossing counter
// repeat (`requestKinds`), and a process's CPU time from /proc (`cpuMs`,
// also bench/cost/'s).
//
//   const result = await runLoadgen(['cost304', '--secs', 5, '--system', 'hub', '--url', url, '--pid', pid]);
//
// Resolves with the JSON object the load generator prints last, or
// `{ error }` with the end of its stderr when it printed none; a run that
// hangs is killed after `timeoutMs` (a hang is a result too). `onStderr`
// sees each chunk of stderr (the fan-out scenario marks there when it
// starts and stops publishing).
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const LOADGEN = join(dirname(fileURLToPath(import.meta.url)), 'loadgen/target/release/hub-loadgen');

// Limits raised so they measure the systems, not our throttles.
export const HUB_BENCH_VARS = { RATE_PER_SEC: '0', MAX_CONNECTIONS_PER_USER: '0', HISTORY_LIMIT: '1000' };

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

/** The user + system CPU time so far, in ms, of process `pid`, or of its thread `tid` when given. */
export function cpuMs(pid, tid) {
  const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
  // Fields after the command name, which sits in parentheses and may hold spaces.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
}

/** Runs the load generator once (see the header). */
export function runLoadgen(argv, { onStderr = () => {}, timeoutMs = 240_000 } = {}) {
  return new Promise((resolve) => {
    const child = spawn(LOADGEN, argv.map(String), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => {
      err += d;
      onStderr(String(d));
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()));
      } catch {
        resolve({ error: `loadgen exit ${code}: ${err.slice(-400)}` });
      }
    });
  });
}

/**
 * Warm-up, not measured: 2 s of publishes and polls, then 2 s of
 * WebSocket fan-out to 50 subscribers. A fresh isolate first runs its code
 * in the baseline tiers and compiles the hot functions in the background
 * (for the hub's WebAssembly ~300 ms of CPU on a V8 worker thread, once
 * per isolate); a deployed isolate lives long. Without the fan-out, a
 * measured fan-out's first broadcasts ran the send loop in the baseline
 * tiers (the likely cause of the hub's higher p99 at 100 subscribers in
 * the rounds before it; see the README). `protocol`: 'hub' or 'floor';
 * `pollsOnly` skips the fan-out, for a server without WebSockets.
 */
export async function warmUp(protocol, server, { pollsOnly = false } = {}) {
  const common = ['--system', protocol, '--url', server.url, '--pid', server.pid, '--label', 'warm-up'];
  const polls = await runLoadgen(['cost304', '--concurrency', 8, '--secs', 2, ...common]);
  if (polls.error || pollsOnly) return polls;
  return runLoadgen(['fanout', '--transport', 'ws', '--subs', 50, '--rate', 100, '--secs', 2, ...common]);
}

/**
 * One request of each kind that bench/profile.mjs and bench/crossings.mjs
 * repeat, on the room at `room` (`…/rooms/NAME`): `publish`, `304` (a
 * poll of the newest 50 with the current ETag) and `200` (the same poll
 * without it). Publishes 50 messages first, so the page is full. Each
 * request reads its body and throws on an unexpected status.
 */
export async function requestKinds(room) {
  const publish = async (i) => {
    const r = await fetch(`${room}/messages`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ data: { i, text: 'hello from the benchmark' } }),
    });
    await r.arrayBuffer();
    if (r.status !== 201) throw new Error(`publish: ${r.status}`);
  };
  const poll = async (headers, expected) => {
    const r = await fetch(`${room}/messages?limit=50`, { headers });
    await r.arrayBuffer();
    if (r.status !== expected) throw new Error(`expected ${expected}, got ${r.status}`);
    return r;
  };
  for (let i = 0; i < 50; i++) await publish(i);
  const etag = (await poll({}, 200)).headers.get('etag');
  return {
    publish: () => publish(0),
    304: () => poll({ 'If-None-Match': etag }, 304),
    200: () => poll({}, 200),
  };
}
