// Starts bench/null/worker.js (the runtime's lower bound for a request a
// Worker answers itself) on bare workerd, 127.0.0.1 only.
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startScriptWorker } from '../../scripts/launch/workerd.mjs';

const here = dirname(fileURLToPath(import.meta.url));

/** Returns {url, port, pid, stop()} (plus scripts/launch/workerd.mjs's log/crash/exited). */
export function start({ port, storageDir, v8Flags }) {
  return startScriptWorker({ script: join(here, 'worker.js'), className: 'NullRoom', port, storageDir, v8Flags });
}
