// Temporary folders for a hub's persisted Durable Object state (the rooms'
// SQLite files), so a run never touches .state/ or another run's rooms.
//
// Invariant: the folder is created under the OS temp folder and `cleanup()`
// removes it and everything in it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fresh folder for persisted state: { dir, cleanup() }. */
export function stateDir(prefix = 'hub-state-') {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
