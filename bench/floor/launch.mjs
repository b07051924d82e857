// Starts the runtime's floor (bench/floor/worker.js, a minimal JavaScript
// Durable Object speaking the hub's protocol) on bare workerd, 127.0.0.1 only.
//
//   const s = await start({ port, storageDir }); ... await s.stop();
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeConfig, startWorkerd } from '../../scripts/launch/workerd.mjs';

const here = dirname(fileURLToPath(import.meta.url));

/** Returns {url, port, pid, stop()} (plus scripts/launch/workerd.mjs's log/crash/exited). */
export async function start({ port, storageDir = mkdtempSync(join(tmpdir(), 'floor-do-')), extraArgs }) {
  const dir = mkdtempSync(join(tmpdir(), 'floor-workerd-'));
  const config = writeConfig({
    dir,
    port,
    storageDir,
    className: 'FloorRoom',
    modules: [{ name: 'worker.js', path: join(here, 'worker.js'), type: 'esModule' }],
  });
  return startWorkerd(config, { port, removeOnExit: [dir], extraArgs });
}
