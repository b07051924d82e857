// Launches the hub the way `npm start` does: scripts/dev.sh, i.e.
// `wrangler dev` with its dev proxy in front of the Worker, the [build]
// step first, state persisted to a folder. Only the port, the state folder
// and extra `--var`s differ, so a caller sees what a developer sees (the
// dev proxy included, which Miniflare and bare workerd do not have).
//
// Invariants: wrangler listens on 127.0.0.1 only (dev.sh passes --ip); the
// start waits at most `readyTimeoutMs` (the first start builds the Worker,
// hence the long default); wrangler leads its own process group and
// `stop()` signals the whole group, so no workerd it spawned outlives it;
// without a `stateDir` a temporary one is used and removed at exit, never
// dev.sh's default .state/.
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './paths.mjs';
import { freePort } from './ports.mjs';
import { stateDir as tempStateDir } from './state.mjs';
import { superviseServer } from './supervise.mjs';

/** How long a start may take: the first one builds the Worker. */
export const DEV_START_MS = 180_000;

/**
 * Starts `npm start`'s server with the settings `vars` (they become
 * `--var KEY:VALUE`: settings and, for tests, `HUB_SECRET`) on `port` (a
 * free one if omitted), its rooms in `stateDir`. Resolves once wrangler
 * said "Ready" and the port accepts connections. Returns superviseServer's
 * handle plus `stateDir` and `restarts()`, how many times wrangler
 * (re)started its local server since; `log()` is everything it printed.
 */
export async function startWranglerDevHub({ vars = {}, stateDir, port, readyTimeoutMs = DEV_START_MS } = {}) {
  port ??= await freePort();
  let removeOnExit;
  if (stateDir === undefined) {
    stateDir = tempStateDir().dir;
    removeOnExit = stateDir;
  }
  const args = Object.entries(vars).flatMap(([k, v]) => ['--var', `${k}:${v}`]);
  const child = spawn('bash', [join(ROOT, 'scripts/dev.sh'), ...args], {
    cwd: ROOT,
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
    onExit: () => removeOnExit && rmSync(removeOnExit, { recursive: true, force: true }),
  });
  return { ...server, stateDir, restarts: () => (log.match(/Starting local server/g) ?? []).length };
}
