// Where the launchers find the repository and the built Worker.
//
// The built Worker is build/ (index.js + index_bg.wasm, written by
// scripts/build.sh), or the folder HUB_BUILD_DIR names, so that a second
// checkout can run its tests and benchmarks against a snapshot of build/
// without building again. Nothing here starts or reads anything.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository's root folder. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** The folder of the built Worker: HUB_BUILD_DIR, else build/. Read at each call, so a caller may set it first. */
export function buildDir() {
  return process.env.HUB_BUILD_DIR ?? join(ROOT, 'build');
}
