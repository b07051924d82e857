// The runtime's floor: the smallest hand-written JavaScript Worker + Durable
// Object that speaks the hub's wire protocol (docs/PROTOCOL.md) for
// the benchmark: no auth, no limits, no presence, no idempotency, no resets.
// Whatever the hub costs above this is the price of its features and of WASM.
import { DurableObject } from 'cloudflare:workers';

const HISTORY = 1000;
const MAX_WAIT_SECS = 30;
const SSE_MAX_QUEUED = 256; // frames a stream may fall behind before we drop it
const ROOM_PATH = /^\/rooms\/([A-Za-z0-9._:-]{1,128})(?:\/(messages|ws|events))?$/;
const EVENT = /^[A-Za-z0-9._:-]{1,64}$/;
const enc = new TextEncoder();

const json = (body, status = 200, headers = {}) =>
  new Response(typeof body === 'string' ? body : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json', ...headers },
  });
const error = (status, code) => json({ error: code, message: code.replace(/_/g, ' ') }, status);
const toInt = (v, dflt) => (v === null || v === '' || !/^\d+$/.test(v) ? dflt : Number(v));

export default {
  async fetch(request, env) {
    const m = new URL(request.url).pathname.match(ROOM_PATH);
    if (!m) return error(404, 'not_found');
    return env.ROOMS.get(env.ROOMS.idFromName(m[1])).fetch(request);
  },
};

export class FloorRoom extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(
      'CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, event TEXT NOT NULL, ts INTEGER NOT NULL, body TEXT NOT NULL)',
    );
    this.lastId = this.sql.exec('SELECT COALESCE(MAX(id), 0) AS id FROM messages').one().id;
    this.streams = new Set(); // SSE stream writers
    this.waiters = new Set(); // long-poll wake-ups
    this.nextConn = 0;
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair('ping', 'pong'));
  }

  async fetch(request) {
    const url = new URL(request.url);
    const [, room, sub] = url.pathname.match(ROOM_PATH);
    const method = request.method;
    if (sub === 'messages' && method === 'POST') return this.httpPublish(request);
    if (method !== 'GET') return error(405, 'method_not_allowed');
    if (sub === 'ws') return this.openWebSocket(request, room, url);
    if (sub === 'events') return this.openEvents(request, url);
    if (sub === 'messages') return this.poll(request, room, url);
    return json({
      room,
      last_id: this.lastId,
      connections: { ws: this.ctx.getWebSockets().length, sse: this.streams.size, poll: this.waiters.size },
      presence: [],
    });
  }

  // Stores one message. The envelope is serialized once, here.
  store(event, data) {
    const id = ++this.lastId;
    const ts = Date.now();
    const body = JSON.stringify({ id, event, from: null, ts, data });
    this.sql.exec('INSERT INTO messages (id, event, ts, body) VALUES (?, ?, ?, ?)', id, event, ts, body);
    this.sql.exec('DELETE FROM messages WHERE id <= ?', id - HISTORY);
    return { id, ts, event, body };
  }

  // Delivers a stored message everywhere: each transport's frame is built
  // once per broadcast, never once per subscriber.
  broadcast({ id, event, body }) {
    const frame = `{"type":"message",${body.slice(1)}`;
    for (const ws of this.ctx.getWebSockets()) {
      try {
        ws.send(frame);
      } catch {
        /* closing socket */
      }
    }
    if (this.streams.size) {
      const bytes = enc.encode(sseFrame(id, event, body));
      for (const w of this.streams) this.write(w, bytes);
    }
    for (const wake of this.waiters) wake();
  }

  after(since, limit = HISTORY) {
    return this.sql.exec('SELECT id, event, body FROM messages WHERE id > ? ORDER BY id LIMIT ?', since, limit).toArray();
  }

  async httpPublish(request) {
    let msg;
    try {
      msg = await request.json();
    } catch {
      return error(400, 'invalid_json');
    }
    const event = eventOf(msg);
    if (!event) return error(400, 'invalid_message');
    const m = this.store(event, msg.data);
    this.broadcast(m);
    return json({ id: m.id, ts: m.ts }, 201);
  }

  // ---- WebSocket (Hibernation API) ----
  openWebSocket(request, room, url) {
    if (request.headers.get('Upgrade')?.toLowerCase() !== 'websocket') return error(426, 'upgrade_required');
    const [client, server] = Object.values(new WebSocketPair());
    this.ctx.acceptWebSocket(server);
    const you = { conn: `c${++this.nextConn}`, user: null };
    server.send(JSON.stringify({ type: 'welcome', room, last_id: this.lastId, you, presence: [] }));
    const since = toInt(url.searchParams.get('since'), null);
    if (since !== null) for (const r of this.after(since)) server.send(`{"type":"message",${r.body.slice(1)}`);
    return new Response(null, { status: 101, webSocket: client });
  }

  webSocketMessage(ws, raw) {
    let msg;
    try {
      msg = JSON.parse(typeof raw === 'string' ? raw : new TextDecoder().decode(raw));
    } catch {
      return ws.send(JSON.stringify({ type: 'error', code: 'invalid_json', message: 'frame is not JSON' }));
    }
    if (msg?.type !== 'publish') {
      return ws.send(JSON.stringify({ type: 'error', code: 'unknown_type', message: 'unknown frame type' }));
    }
    const event = eventOf(msg);
    if (!event) return ws.send(JSON.stringify({ type: 'error', code: 'invalid_message', message: 'bad event or data' }));
    const m = this.store(event, msg.data);
    ws.send(JSON.stringify({ type: 'ack', cid: msg.cid ?? null, id: m.id }));
    this.broadcast(m);
  }

  webSocketClose(ws, code, reason) {
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, reason);
    } catch {
      /* already closed */
    }
  }

  webSocketError() {}

  // ---- Server-Sent Events ----
  openEvents(request, url) {
    const since = toInt(url.searchParams.get('since') ?? request.headers.get('Last-Event-ID'), null);
    const { readable, writable } = new TransformStream();
    const writer = writable.getWriter();
    let head = 'retry: 1000\n\n';
    if (since !== null) for (const r of this.after(since)) head += sseFrame(r.id, r.event, r.body);
    this.streams.add(writer);
    this.write(writer, enc.encode(head));
    return new Response(readable, {
      headers: { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' },
    });
  }

  // A stream whose reader went away either rejects the write or stops
  // draining (workerd does not cancel it): drop it in both cases.
  write(writer, bytes) {
    if (writer.desiredSize !== null && writer.desiredSize < -SSE_MAX_QUEUED) {
      this.streams.delete(writer);
      writer.abort().catch(() => {});
      return;
    }
    writer.write(bytes).catch(() => this.streams.delete(writer));
  }

  // ---- Polling and long polling ----
  async poll(request, room, url) {
    const since = toInt(url.searchParams.get('since'), null);
    const limit = Math.min(Math.max(toInt(url.searchParams.get('limit'), 50), 1), HISTORY);
    const wait = Math.min(toInt(url.searchParams.get('wait'), 0), MAX_WAIT_SECS);
    const inm = request.headers.get('If-None-Match');
    const fresh = () => (since !== null ? this.lastId > since : inm !== `"${this.lastId}"`);

    if (wait > 0 && !fresh()) {
      await new Promise((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, wait * 1000);
        this.waiters.add(done);
      });
    }
    const etag = `"${this.lastId}"`;
    if (inm === etag) return new Response(null, { status: 304, headers: { ETag: etag, 'Cache-Control': 'no-cache' } });

    const rows =
      since !== null
        ? this.after(since, limit)
        : this.sql.exec('SELECT id, body FROM (SELECT id, body FROM messages ORDER BY id DESC LIMIT ?) ORDER BY id', limit).toArray();
    const lastId = rows.length ? rows[rows.length - 1].id : this.lastId;
    const body = `{"room":${JSON.stringify(room)},"messages":[${rows.map((r) => r.body).join(',')}],"last_id":${lastId}}`;
    return json(body, 200, { ETag: etag, 'Cache-Control': 'no-cache' });
  }
}

// The event name of a publish (default `message`), or null when invalid.
function eventOf(msg) {
  if (msg === null || typeof msg !== 'object' || !('data' in msg)) return null;
  const event = msg.event ?? 'message';
  return typeof event === 'string' && EVENT.test(event) ? event : null;
}

function sseFrame(id, event, body) {
  return `id: ${id}\nevent: ${event}\ndata: ${body}\n\n`;
}
