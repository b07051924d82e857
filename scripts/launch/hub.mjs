// One way to start the hub with settings, whichever runtime runs it:
//
//   const hub = await startHub({ runtime: 'workerd', vars: { RATE_PER_SEC: '0' } });
//   ... hub.url ...
//   await hub.stop();
//
// runtime  'miniflare'    workerd inside this process behind Miniflare (miniflare.mjs)
//          'workerd'      bare workerd as a child process; has pid and crash() (workerd.mjs)
//          'wrangler-dev' `npm start`: scripts/dev.sh, wrangler's dev proxy, the [build] step first (wrangler-dev.mjs)
// vars     settings ([vars] bindings, e.g. HUB_SECRET, RATE_PER_SEC), as strings
// stateDir a folder for the rooms' persisted state, kept after stop() so a
//          later start on it sees the same rooms; omitted: a fresh state
//          that is gone after stop()
// port     a loopback port; omitted: a free one
//
// Every launcher resolves to the same handle, { url, port, stateDir, stop() },
// with `pid`, `log()` and `crash()` (SIGKILL) where the hub is a child process.
//
// Invariants (of every launcher): loopback only; every wait has a timeout;
// stop() ends what the start started and resolves once it is gone.
import { startMiniflareHub } from './miniflare.mjs';
import { startWorkerdHub } from './workerd.mjs';
import { startWranglerDevHub } from './wrangler-dev.mjs';

export const RUNTIMES = {
  miniflare: startMiniflareHub,
  workerd: startWorkerdHub,
  'wrangler-dev': startWranglerDevHub,
};

/** Starts the hub on `runtime` with `vars`, `stateDir`, `port` (see above). */
export async function startHub({ runtime, ...options }) {
  const start = RUNTIMES[runtime];
  if (!start) throw new Error(`startHub: runtime must be one of ${Object.keys(RUNTIMES).join(', ')}; got ${runtime}`);
  return start(options);
}
