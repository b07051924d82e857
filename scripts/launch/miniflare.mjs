// Launches the hub's built Worker (index.js + index_bg.wasm) under
// Miniflare, i.e. workerd embedded in this Node process behind Miniflare's
// loopback proxy: the quickest start, used by most specs.
//
// Invariants: it listens on 127.0.0.1 only; the start waits at most
// `readyTimeoutMs`, and a start that fails or times out disposes what it
// started; `stop()` disposes the Miniflare instance and the workerd it runs.
// Without a `stateDir` the rooms live in memory and are gone at `stop()`; a
// `stateDir` the caller passes is kept, so a later start on it sees the same
// rooms.
import { Miniflare } from 'miniflare';
import { join } from 'node:path';
import { buildDir } from './paths.mjs';

/**
 * Starts the hub with the settings `vars` ([vars] bindings) on `port` (one
 * Miniflare picks if omitted). Returns { url, port, stateDir, mf, stop() }.
 */
export async function startMiniflareHub({ vars = {}, stateDir, port = 0, readyTimeoutMs = 20000 } = {}) {
  const build = buildDir();
  const mf = new Miniflare({
    host: '127.0.0.1',
    port,
    compatibilityDate: '2026-04-20',
    modulesRoot: build,
    modules: [
      { type: 'ESModule', path: join(build, 'index.js') },
      { type: 'CompiledWasm', path: join(build, 'index_bg.wasm') },
    ],
    durableObjects: { ROOMS: { className: 'RoomObject', useSQLite: true } },
    durableObjectsPersist: stateDir ?? false,
    bindings: vars,
  });
  let timer;
  try {
    const ready = await Promise.race([
      mf.ready,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Miniflare was not ready within ${readyTimeoutMs} ms`)), readyTimeoutMs);
      }),
    ]);
    const url = ready.toString().replace(/\/$/, '');
    return {
      url,
      port: Number(new URL(url).port),
      stateDir,
      mf,
      async stop() {
        await mf.dispose();
      },
    };
  } catch (e) {
    await mf.dispose().catch(() => {});
    throw e;
  } finally {
    clearTimeout(timer);
  }
}
