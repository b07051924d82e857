// Launches a Worker on bare workerd (no wrangler, no Miniflare proxy) as a
// child process that can be stopped, SIGKILLed mid-traffic and started
// again on the same storage: the hub's built Worker (`startWorkerdHub`), or
// any Worker with one SQLite Durable Object namespace (`writeConfig` +
// `startWorkerd`; a single-module one with `startScriptWorker`, e.g. the
// benchmarks' floor).
//
// Invariants: the socket listens on 127.0.0.1 only; the start waits at most
// `readyTimeoutMs` (superviseServer); `stop()` ends the workerd it started
// and then removes the config folder it wrote and any state folder it made
// itself (a `stateDir` the caller passed is left alone, so a restart on it
// sees the same rooms).
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT, buildDir } from './paths.mjs';
import { freePort } from './ports.mjs';
import { stateDir as tempStateDir } from './state.mjs';
import { superviseServer } from './supervise.mjs';

export const WORKERD_BIN = join(ROOT, 'node_modules/@cloudflare/workerd-linux-64/bin/workerd');

const capnpString = (s) => JSON.stringify(String(s));

/**
 * Writes a workerd config for a Worker + SQLite Durable Object namespace.
 * `modules`: [{name, path, type: 'esModule'|'wasm'}]; `vars`: text bindings;
 * `v8Flags`: V8's own flags (bench/perf.mjs names JIT code for `perf`).
 */
export function writeConfig({ dir, port, storageDir, modules, vars = {}, className, namespaceBinding = 'ROOMS', compatibilityDate = '2026-04-20', address = '127.0.0.1', v8Flags = [] }) {
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
    # Outbound fetches (webhooks, JWKS_URL) may reach the test's loopback servers.
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [(name = "http", address = ${capnpString(`${address}:${port}`)}, http = (), service = "main")],
  v8Flags = [${v8Flags.map(capnpString).join(', ')}],
);
const hub :Workerd.Worker = (
  modules = [${mods.join(', ')}],
  compatibilityDate = ${capnpString(compatibilityDate)},
  bindings = [${bindings.join(', ')}],
  durableObjectNamespaces = [(className = ${capnpString(className)}, uniqueKey = ${capnpString(`${className}-${port}`)}, enableSql = true)],
  durableObjectStorage = (localDisk = "do-storage"),
  globalOutbound = "internet",
);
`;
  const path = join(dir, `workerd-${port}.capnp`);
  writeFileSync(path, config);
  return path;
}

/**
 * Spawns workerd on a config and waits for its socket on `port`. Every
 * folder in `removeOnExit` is removed once the process has exited.
 * `extraArgs` go to `workerd serve` (e.g. `--inspector-addr=…` for
 * bench/profile.mjs). Returns superviseServer's handle, whose `stop()`
 * also waits (up to 2 s) for the last of workerd's output: it buffers its
 * stdout, which may arrive after the process has exited, and a stopped
 * server's `log()` is then whole (bench/ab.mjs --gc reads V8's records
 * there).
 */
export async function startWorkerd(config, { port, removeOnExit = [], readyTimeoutMs, extraArgs = [] } = {}) {
  const child = spawn(WORKERD_BIN, ['serve', config, '--experimental', ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  // 'close': the process has exited and its output pipes have ended.
  const outputEnded = new Promise((res) => child.once('close', res));
  const server = await superviseServer(child, {
    port,
    name: 'workerd',
    log: () => log,
    // workerd may ignore SIGTERM with open connections; SIGINT stops it.
    stopSignal: 'SIGINT',
    readyTimeoutMs,
    onExit: () => {
      for (const dir of removeOnExit) rmSync(dir, { recursive: true, force: true });
    },
  });
  return {
    ...server,
    async stop() {
      await server.stop();
      // An unref'd timer: it never keeps a finished test run alive.
      await Promise.race([outputEnded, sleep(2000, undefined, { ref: false })]);
    },
  };
}

/**
 * Starts a single-module JavaScript Worker (`script`, with one SQLite
 * Durable Object class `className` bound as ROOMS) on workerd, its storage
 * in `storageDir` (a temporary folder if omitted, not removed), 127.0.0.1
 * only: the benchmarks' reference Workers (bench/floor/, bench/null/).
 * Returns superviseServer's handle.
 */
export async function startScriptWorker({ script, className, port, storageDir, extraArgs, v8Flags }) {
  storageDir ??= mkdtempSync(join(tmpdir(), 'script-do-'));
  const dir = mkdtempSync(join(tmpdir(), 'script-workerd-'));
  const config = writeConfig({
    dir,
    port,
    storageDir,
    className,
    modules: [{ name: 'worker.js', path: script, type: 'esModule' }],
    v8Flags,
  });
  return startWorkerd(config, { port, removeOnExit: [dir], extraArgs });
}

/**
 * Starts the hub's built Worker on workerd with the settings `vars`, on
 * `port` (a free one if omitted), its rooms persisted in `stateDir` (a
 * temporary folder, removed at exit, if omitted; start again on the same
 * folder after a `crash()` or `stop()` to restart). Returns
 * { url, port, pid, stateDir, log, exited, crash(), stop() }.
 */
export async function startWorkerdHub({ vars = {}, stateDir, port, readyTimeoutMs, extraArgs, v8Flags } = {}) {
  port ??= await freePort();
  const removeOnExit = [mkdtempSync(join(tmpdir(), 'hub-workerd-'))];
  if (stateDir === undefined) {
    stateDir = tempStateDir().dir;
    removeOnExit.push(stateDir);
  }
  const build = buildDir();
  const config = writeConfig({
    dir: removeOnExit[0],
    port,
    storageDir: stateDir,
    className: 'RoomObject',
    modules: [
      { name: 'index.js', path: join(build, 'index.js'), type: 'esModule' },
      { name: 'index_bg.wasm', path: join(build, 'index_bg.wasm'), type: 'wasm' },
    ],
    vars,
    v8Flags,
  });
  const server = await startWorkerd(config, { port, removeOnExit, readyTimeoutMs, extraArgs });
  return { ...server, stateDir };
}
