// A loopback TCP proxy in front of the hub that a test controls, to play
// the networks a browser meets: it forwards bytes as they are, and can
//
// - block(kind): refuse new connections of a kind (accepted, then reset
//   once their first request shows what they are);
// - drop(kind): destroy every open connection of a kind at once;
// - stall(kind): stop forwarding on every open connection of a kind while
//   keeping both sockets open (a black hole: bytes in either direction are
//   discarded), as a dead NAT or a frozen middlebox does. New connections
//   are forwarded normally.
//
// `kind` is 'ws' (WebSocket upgrades), 'sse' (requests for /events),
// 'http' (any other request) or 'all'. A connection's kind is read from the
// request line and headers of each request it carries (keep-alive
// connections may change kind between requests).
import net from 'node:net';

function classify(head) {
  const text = head.toString('latin1');
  const line = text.slice(0, text.indexOf('\r\n'));
  if (/^\s*upgrade:\s*websocket\s*$/im.test(text)) return 'ws';
  if (/^[A-Z]+ \S*\/events(\?\S*)? HTTP\//.test(line)) return 'sse';
  return 'http';
}

const REQUEST_LINE = /^(GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH) \S+ HTTP\/1\.[01]\r\n/;

export async function startProxy(targetPort, targetHost = '127.0.0.1') {
  const conns = new Set();
  const blocked = new Set();
  const counts = { accepted: 0, refused: 0, ws: 0, sse: 0, http: 0 };
  const matches = (kind, conn) => kind === 'all' || conn.kind === kind;

  const server = net.createServer((client) => {
    counts.accepted += 1;
    client.setNoDelay(true);
    if (blocked.has('all')) {
      counts.refused += 1;
      client.resetAndDestroy();
      return;
    }
    const conn = { client, upstream: null, kind: null, stalled: false, pending: [] };
    conns.add(conn);
    const end = () => {
      conns.delete(conn);
      client.destroy();
      conn.upstream?.destroy();
    };
    client.on('error', end);
    client.on('close', end);
    client.on('data', (chunk) => {
      if (conn.stalled) return;
      const head = chunk.toString('latin1', 0, Math.min(chunk.length, 4096));
      if (REQUEST_LINE.test(head) || conn.kind === null) {
        conn.kind = classify(chunk);
        counts[conn.kind] += 1;
        if (blocked.has(conn.kind)) {
          counts.refused += 1;
          client.resetAndDestroy();
          return;
        }
      }
      if (!conn.upstream) {
        conn.pending.push(chunk);
        conn.upstream = net.connect(targetPort, targetHost, () => {
          conn.upstream.setNoDelay(true);
          for (const c of conn.pending) conn.upstream.write(c);
          conn.pending = [];
        });
        conn.upstream.on('data', (data) => {
          if (!conn.stalled) client.write(data);
        });
        conn.upstream.on('error', end);
        conn.upstream.on('close', end);
        return;
      }
      if (conn.upstream.connecting) conn.pending.push(chunk);
      else conn.upstream.write(chunk);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    counts,
    /** Open connections, by kind. */
    open(kind = 'all') {
      return [...conns].filter((c) => matches(kind, c) && !c.stalled).length;
    },
    block(kind = 'all') {
      blocked.add(kind);
    },
    unblock(kind = 'all') {
      if (kind === 'all') blocked.clear();
      else blocked.delete(kind);
    },
    drop(kind = 'all') {
      let n = 0;
      for (const c of [...conns]) {
        if (!matches(kind, c)) continue;
        n += 1;
        conns.delete(c);
        c.client.resetAndDestroy();
        c.upstream?.destroy();
      }
      return n;
    },
    stall(kind = 'all') {
      let n = 0;
      for (const c of conns) {
        if (matches(kind, c) && !c.stalled) {
          c.stalled = true;
          n += 1;
        }
      }
      return n;
    },
    async close() {
      for (const c of conns) {
        c.client.destroy();
        c.upstream?.destroy();
      }
      conns.clear();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
