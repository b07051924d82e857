// Starts the runtime's floor (bench/floor/worker.js, a minimal JavaScript
// Durable Object speaking the hub's protocol) on bare workerd, 127.0.0.1 only.
//
//   const s = await start({ port, storageDir }); ... await s.stop();
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startScriptWorker } from '../../scripts/launch/workerd.mjs';

const here = dirname(fileURLToPath(import.meta.url));

/** Returns {url, port, pid, stop()} (plus scripts/launch/workerd.mjs's log/crash/exited). */
export function start({ port, storageDir, extraArgs, v8Flags }) {
  return startScriptWorker({ script: join(here, 'worker.js'), className: 'FloorRoom', port, storageDir, extraArgs, v8Flags });
}
