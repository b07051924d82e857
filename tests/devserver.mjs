// Runs the hub the way `npm start` does: scripts/dev.sh, i.e. `wrangler dev`
// with its dev proxy in front of the Worker, the [build] step first, state
// persisted to a folder. Only the port, the state folder and extra
// `--var`s differ, so tests see what a developer sees (the dev proxy
// included, which Miniflare and bare workerd do not have).
import { spawn } from 'node:child_process';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './harness.mjs';
import { superviseServer } from './workerd.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** How long a start may take: the first one builds the Worker. */
export const DEV_START_MS = 180_000;

/**
 * Starts `npm start`'s server on a free loopback port with its state in
 * `stateDir`; `vars` become `--var KEY:VALUE` (settings and, for tests,
 * `HUB_SECRET`). Resolves once wrangler said "Ready" and the port accepts
 * connections. Returns superviseServer's handle plus `log()`, everything
 * wrangler printed, and `restarts()`, how many times it (re)started the
 * local server since. `stop()` ends wrangler and its workerd children.
 */
export async function startDevServer({ stateDir, vars = {}, port, readyTimeoutMs = DEV_START_MS }) {
  port ??= await freePort();
  const args = Object.entries(vars).flatMap(([k, v]) => ['--var', `${k}:${v}`]);
  const child = spawn('bash', [join(root, 'scripts/dev.sh'), ...args], {
    cwd: root,
    env: {
      ...process.env,
      PORT: String(port),
      HUB_STATE_DIR: stateDir,
      WRANGLER_SEND_METRICS: 'false',
      WRANGLER_SEND_ERROR_REPORTS: 'false',
      CLOUDFLARE_CF_FETCH_ENABLED: 'false',
      NO_COLOR: '1',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group: stop() signals wrangler and every workerd it spawned.
    detached: true,
  });
  let log = '';
  let onLog = () => {};
  const append = (d) => {
    log += d;
    onLog();
  };
  child.stdout.on('data', append);
  child.stderr.on('data', append);
  const ready = new Promise((res) => {
    onLog = () => {
      if (log.includes(`Ready on http://127.0.0.1:${port}`)) {
        onLog = () => {};
        res();
      }
    };
  });
  const server = await superviseServer(child, {
    port,
    name: 'wrangler dev',
    log: () => log,
    stopSignal: 'SIGINT',
    readyTimeoutMs,
    ready,
    group: true,
  });
  return { ...server, restarts: () => (log.match(/Starting local server/g) ?? []).length };
}
