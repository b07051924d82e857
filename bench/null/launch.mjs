// Starts bench/null/worker.js (the runtime's lower bound for a request a
// Worker answers itself) on bare workerd, 127.0.0.1 only.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeConfig, startWorkerd } from '../../scripts/launch/workerd.mjs';

const here = dirname(fileURLToPath(import.meta.url));

/** Returns {url, port, pid, stop()} (plus scripts/launch/workerd.mjs's log/crash/exited). */
export async function start({ port, storageDir = mkdtempSync(join(tmpdir(), 'null-do-')) }) {
  const dir = mkdtempSync(join(tmpdir(), 'null-workerd-'));
  const config = writeConfig({
    dir,
    port,
    storageDir,
    className: 'NullRoom',
    modules: [{ name: 'worker.js', path: join(here, 'worker.js'), type: 'esModule' }],
  });
  return startWorkerd(config, { port, removeOnExit: [dir] });
}
