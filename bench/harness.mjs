// What bench/run.mjs, bench/ab.mjs and bench/profile.mjs share: the hub's
// benchmark settings, the one way to run the load generator
// (bench/loadgen/, built by bench/run.sh), and the warm-up.
//
//   const result = await runLoadgen(['cost304', '--secs', 5, '--system', 'hub', '--url', url, '--pid', pid]);
//
// Resolves with the JSON object the load generator prints last, or
// `{ error }` with the end of its stderr when it printed none; a run that
// hangs is killed after `timeoutMs` (a hang is a result too). `onStderr`
// sees each chunk of stderr (the fan-out scenario marks there when it
// starts and stops publishing).
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const LOADGEN = join(dirname(fileURLToPath(import.meta.url)), 'loadgen/target/release/hub-loadgen');

// Limits raised so they measure the systems, not our throttles.
export const HUB_BENCH_VARS = { RATE_PER_SEC: '0', MAX_CONNECTIONS_PER_USER: '0', HISTORY_LIMIT: '1000' };

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
 * Warm-up, not measured: 2 s of publishes and polls. A fresh isolate first
 * runs its code in the baseline tiers and compiles the hot functions in
 * the background (for the hub's WebAssembly ~300 ms of CPU on a V8 worker
 * thread, once per isolate); a deployed isolate lives long. `protocol`:
 * 'hub' or 'floor'.
 */
export function warmUp(protocol, server) {
  return runLoadgen(['cost304', '--concurrency', 8, '--secs', 2, '--system', protocol, '--url', server.url, '--pid', server.pid, '--label', 'warm-up']);
}
