// One harness for every spec: starts the built Worker (build/index.js +
// build/index_bg.wasm) under Miniflare's embedded workerd on loopback,
// with a fresh or a given persisted state directory, and stops it.
import { Miniflare } from 'miniflare';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// HUB_BUILD_DIR lets a second checkout test a snapshot of build/.
const buildDir = process.env.HUB_BUILD_DIR ?? join(root, 'build');

/** A fresh directory for persisted Durable Object state; removed by `cleanup`. */
export function stateDir() {
  const dir = mkdtempSync(join(tmpdir(), 'hub-state-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Starts the hub. `vars` override settings ([vars]); `persistDir` keeps the
 * rooms' SQLite state on disk so a later `startHub` on it sees the same rooms.
 */
export async function startHub({ vars = {}, persistDir, port = 0 } = {}) {
  const mf = new Miniflare({
    host: '127.0.0.1',
    port,
    compatibilityDate: '2026-04-20',
    modulesRoot: buildDir,
    modules: [
      { type: 'ESModule', path: join(buildDir, 'index.js') },
      { type: 'CompiledWasm', path: join(buildDir, 'index_bg.wasm') },
    ],
    durableObjects: { ROOMS: { className: 'RoomObject', useSQLite: true } },
    durableObjectsPersist: persistDir ?? false,
    bindings: vars,
  });
  const url = (await mf.ready).toString().replace(/\/$/, '');
  return {
    url,
    mf,
    async stop() {
      await mf.dispose();
    },
  };
}

/** A unique room name per test, so tests never see each other's messages. */
let roomCounter = 0;
export function roomName(prefix = 'room') {
  roomCounter += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${roomCounter}`;
}

/** POST a message; resolves to { status, body, headers }. */
export async function publish(url, room, payload, headers = {}) {
  const res = await fetch(`${url}/rooms/${room}/messages`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof payload === 'string' ? payload : JSON.stringify(payload),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers };
}

/** GET a JSON route; resolves to { status, body, headers }. */
export async function getJson(url, path, headers = {}) {
  const res = await fetch(`${url}${path}`, { headers });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers };
}

/** A loopback port that was free a moment ago (for restarts on the same port). */
export async function freePort() {
  const srv = net.createServer();
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}
