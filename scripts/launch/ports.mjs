// Loopback ports for the servers the launchers start: a port that is free
// now, and a bounded wait until something listens on one.
//
// Invariants: only 127.0.0.1 (or the host a caller names, always a local
// one) is ever bound or connected to; every wait ends by its timeout.
import net from 'node:net';

/** A loopback port that was free a moment ago (for a server to bind, or to restart on the same port). */
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

/** Waits until something accepts TCP connections on `port` (bounded by `timeoutMs`; `signal` stops it early). */
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
