// Runs the built Worker on bare workerd (no wrangler, no Miniflare proxy)
// as a child process we can SIGKILL and restart on the same storage. Used
// by the reliability tests and the benchmarks.
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import { join, dirname, resolve, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const WORKERD_BIN = join(root, 'node_modules/@cloudflare/workerd-linux-64/bin/workerd');

const capnpString = (s) => JSON.stringify(String(s));

/**
 * Writes a workerd config for a Worker + SQLite Durable Object namespace.
 * `modules`: [{name, path, type: 'esModule'|'wasm'}]; `vars`: text bindings.
 */
export function writeConfig({ dir, port, storageDir, modules, vars = {}, className, namespaceBinding = 'ROOMS', compatibilityDate = '2026-04-20', address = '127.0.0.1' }) {
  mkdirSync(storageDir, { recursive: true });
  const bindings = [
    ...Object.entries(vars).map(([name, value]) => `(name = ${capnpString(name)}, text = ${capnpString(value)})`),
    `(name = ${capnpString(namespaceBinding)}, durableObjectNamespace = ${capnpString(className)})`,
  ];
  // workerd resolves `embed` paths relative to the config file.
  const mods = modules.map((m) => `(name = ${capnpString(m.name)}, ${m.type} = embed ${capnpString(relative(dir, m.path))})`);
  const config = `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .hub),
    (name = "do-storage", disk = (path = ${capnpString(storageDir)}, writable = true)),
  ],
  sockets = [(name = "http", address = ${capnpString(`${address}:${port}`)}, http = (), service = "main")],
);
const hub :Workerd.Worker = (
  modules = [${mods.join(', ')}],
  compatibilityDate = ${capnpString(compatibilityDate)},
  bindings = [${bindings.join(', ')}],
  durableObjectNamespaces = [(className = ${capnpString(className)}, uniqueKey = ${capnpString(`${className}-${port}`)}, enableSql = true)],
  durableObjectStorage = (localDisk = "do-storage"),
);
`;
  const path = join(dir, `workerd-${port}.capnp`);
  writeFileSync(path, config);
  return path;
}

/** Waits until something accepts TCP connections on `port` (bounded; `signal` stops it early). */
export async function waitForPort(port, timeoutMs = 20000, host = '127.0.0.1', signal = undefined) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (signal?.aborted) throw new Error(`stopped waiting for ${host}:${port}`);
    const ok = await new Promise((res) => {
      const s = net.connect(port, host);
      s.once('connect', () => {
        s.destroy();
        res(true);
      });
      s.once('error', () => res(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listened on ${host}:${port} within ${timeoutMs} ms`);
}

/**
 * Starts the hub's built Worker on workerd. Returns {url, pid, kill(signal), stop()}.
 * `storageDir` persists the rooms; start again on it after a kill to restart.
 */
export async function startWorkerdHub({ port, storageDir, vars = {}, buildDir = process.env.HUB_BUILD_DIR ?? join(root, 'build') }) {
  const configDir = mkdtempSync(join(tmpdir(), 'hub-workerd-'));
  const config = writeConfig({
    dir: configDir,
    port,
    storageDir,
    className: 'RoomObject',
    modules: [
      { name: 'index.js', path: join(buildDir, 'index.js'), type: 'esModule' },
      { name: 'index_bg.wasm', path: join(buildDir, 'index_bg.wasm'), type: 'wasm' },
    ],
    vars,
  });
  return startWorkerd(config, port, configDir);
}

/**
 * Spawns workerd on a config and waits for its socket. `tempDir`, if given,
 * is removed once the process has exited.
 */
export async function startWorkerd(config, port, tempDir) {
  const child = spawn(WORKERD_BIN, ['serve', config, '--experimental'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  return superviseServer(child, {
    port,
    name: 'workerd',
    log: () => log,
    // workerd may ignore SIGTERM with open connections; SIGINT stops it.
    stopSignal: 'SIGINT',
    onExit: () => tempDir && rmSync(tempDir, { recursive: true, force: true }),
  });
}

/**
 * Waits until a spawned server `child` listens on 127.0.0.1:`port` (within
 * `readyTimeoutMs`) and, if given, until the promise `ready` resolves too; if
 * it exits first or never gets there, kills it and throws with its `log()`.
 * Returns its handle: {url, pid, log, exited, crash(), stop()}. `stop()`
 * sends `stopSignal`, then SIGKILL after 5 s; `crash()` is SIGKILL at once
 * (the process dies mid-whatever). With `group`, the child leads its own
 * process group (spawned `detached`) and every signal goes to the whole
 * group, so servers that spawn servers (wrangler → workerd) stop entirely.
 * `onExit` runs once the process is gone.
 */
export async function superviseServer(child, { port, name, log, stopSignal = 'SIGTERM', onExit = () => {}, readyTimeoutMs = 20000, ready, group = false }) {
  const signal = (sig) => {
    try {
      if (group) process.kill(-child.pid, sig);
      else child.kill(sig);
    } catch {
      // Already gone.
    }
  };
  const exited = new Promise((res) =>
    child.once('exit', (code, signal) => {
      onExit();
      res({ code, signal });
    }),
  );
  let timer;
  const waiting = new AbortController();
  try {
    await Promise.race([
      Promise.all([waitForPort(port, readyTimeoutMs, '127.0.0.1', waiting.signal), ready]),
      exited.then(({ code, signal }) => {
        throw new Error(`${name} exited (${code ?? signal}) before listening:\n${log()}`);
      }),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${name} was not ready within ${readyTimeoutMs} ms:\n${log()}`)), readyTimeoutMs);
      }),
    ]);
  } catch (e) {
    signal('SIGKILL');
    throw e;
  } finally {
    clearTimeout(timer);
    waiting.abort();
  }
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  return {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid,
    log,
    exited,
    async crash() {
      signal('SIGKILL');
      await exited;
    },
    async stop() {
      if (!gone()) {
        signal(stopSignal);
        const timer = setTimeout(() => signal('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      // The leader is gone; make sure nothing it spawned outlives it.
      if (group) signal('SIGKILL');
    },
  };
}
