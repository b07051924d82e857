// Supervises a server process that a launcher spawned: waits, bounded,
// until it listens, and gives back one handle to stop it.
//
// Invariants: it waits for 127.0.0.1:`port` only; every wait has a timeout
// (a server that never listens is killed and the error carries its log);
// `stop()` ends the process it was given (and, with `group`, everything
// that process spawned), escalating to SIGKILL, and resolves only once it
// has exited.
import { waitForPort } from './ports.mjs';

/**
 * Waits until a spawned server `child` listens on 127.0.0.1:`port` (within
 * `readyTimeoutMs`) and, if given, until the promise `ready` resolves too; if
 * it exits first or never gets there, kills it and throws with its `log()`.
 * Returns its handle: {url, port, pid, log, exited, crash(), stop()}. `stop()`
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
    port,
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
