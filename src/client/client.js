// The hub's browser client: one ES module, no dependencies, no build step.
//
//   import { connect } from 'https://your-hub.example/client.js';
//   const room = connect('https://your-hub.example/rooms/lobby');
//   room.on('message', (m) => console.log(m.id, m.data));
//   await room.publish({ text: 'hi' });
//
// Guarantees: the page sees every message once, in id order, whichever
// transport carries it and however often it reconnects; when the hub could
// not keep what was missed, a 'reset' event says so. Publishes carry an
// idempotency key (WebSocket `cid`, HTTP `Idempotency-Key`), so a retry
// after a dropped connection never stores a message twice.

const DEFAULT_EVENT = 'message';
const CONNECT_TIMEOUT_MS = 5000;
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;
const LONG_POLL_WAIT_S = 25;
const POLL_LIMIT = 1000;
// Close codes after which reconnecting cannot help (policy, message too big).
const FATAL_CLOSE_CODES = new Set([1008]);
// HTTP statuses after which reconnecting cannot help without a new token.
const FATAL_STATUSES = new Set([400, 401, 403, 404]);
const TRANSPORTS = ['ws', 'sse', 'poll'];

/**
 * Picks a transport from what the page needs, as the decision framework
 * goes: two-way traffic wants a WebSocket; frequent one-way updates want
 * Server-Sent Events; rare updates are cheapest as polling.
 */
export function chooseTransport({ bidirectional = false, updatesPerMinute = 60 } = {}) {
  if (bidirectional) return 'ws';
  if (updatesPerMinute >= 1) return 'sse';
  return 'poll';
}

/** Full-jitter exponential backoff: uniform in [0, min(cap, base * 2^attempt)]. */
export function backoffDelay(attempt, base = BACKOFF_BASE_MS, cap = BACKOFF_CAP_MS) {
  return Math.random() * Math.min(cap, base * 2 ** attempt);
}

function randomId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

class HubError extends Error {
  constructor(code, message, status) {
    super(message || code);
    this.code = code;
    this.status = status;
  }
}

/**
 * Connects to a room. `url` is the room's URL (`https://hub/rooms/NAME`,
 * absolute or relative to the page). Options:
 * - `transport`: 'auto' (default: WebSocket, then SSE, then polling when
 *   one cannot connect), 'ws', 'sse', 'poll', or 'hints' with `hints`.
 * - `hints`: `{ bidirectional, updatesPerMinute }` for `chooseTransport`.
 * - `token`: a hub token (sent as `?token=` where browsers cannot set headers).
 * - `since`: resume after this message id; without it, live messages only.
 * - `pollIntervalMs`: poll at this interval instead of long-polling.
 */
export function connect(url, options = {}) {
  return new Room(url, options);
}

class Room {
  constructor(url, options) {
    const base = new URL(url, globalThis.location?.href);
    base.pathname = base.pathname.replace(/\/+$/, '');
    this.url = base;
    this.token = options.token ?? null;
    this.pollIntervalMs = options.pollIntervalMs ?? null;
    const mode = options.transport ?? 'auto';
    if (mode === 'hints') this.candidates = [chooseTransport(options.hints)];
    else if (mode === 'auto') this.candidates = TRANSPORTS.slice();
    else if (TRANSPORTS.includes(mode)) this.candidates = [mode];
    else throw new TypeError(`unknown transport '${mode}'`);
    this.auto = mode === 'auto';
    this.lastId = Number.isInteger(options.since) ? options.since : null;
    this.presence = [];
    // Members in all; more than presence.length when the room is above
    // PRESENCE_MAX_MEMBERS (the hub then lists only the first ones).
    this.presenceCount = 0;
    this.status = { state: 'connecting', transport: this.candidates[0] };
    this.listeners = new Map();
    this.pending = new Map(); // cid -> { frame, resolve, reject } (WebSocket publishes)
    this.session = randomId();
    this.counter = 0;
    this.attempt = 0;
    this.closed = false;
    this.conn = null;
    this.timer = null;
    queueMicrotask(() => this.open());
  }

  /** Listens to 'message', an event name, 'status', 'presence', 'join', 'leave', 'reset' or 'error'. */
  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(fn);
    return () => this.listeners.get(event)?.delete(fn);
  }

  emit(event, value) {
    for (const fn of this.listeners.get(event) ?? []) {
      try {
        fn(value);
      } catch (e) {
        console.error(e);
      }
    }
  }

  get transport() {
    return this.status.transport;
  }

  setStatus(state, extra = {}) {
    this.status = { state, transport: this.candidates[0], ...extra };
    this.emit('status', this.status);
  }

  /** Delivers a message at most once and in id order. */
  deliver(msg) {
    if (typeof msg?.id !== 'number') return;
    if (this.lastId !== null && msg.id <= this.lastId) return;
    this.lastId = msg.id;
    const { type, ...envelope } = msg;
    this.emit('message', envelope);
    if (envelope.event !== DEFAULT_EVENT) this.emit(envelope.event, envelope);
  }

  signalReset(reset) {
    this.emit('reset', reset);
  }

  /** Publishes; resolves to the stored message's id. */
  publish(data, { event } = {}) {
    if (this.closed) return Promise.reject(new HubError('closed', 'the room is closed'));
    const cid = `${this.session}-${++this.counter}`;
    const body = event === undefined ? { data } : { event, data };
    if (this.transport === 'ws') {
      return new Promise((resolve, reject) => {
        const frame = JSON.stringify({ type: 'publish', ...body, cid });
        this.pending.set(cid, { frame, resolve, reject });
        if (this.conn?.ready) this.conn.send(frame);
        // Otherwise it is sent after the next welcome.
      });
    }
    return this.publishHttp(body, cid);
  }

  async publishHttp(body, key, attempt = 0) {
    let res;
    try {
      res = await fetch(`${this.url}/messages`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Idempotency-Key': key, ...this.authHeader() },
        body: JSON.stringify(body),
      });
    } catch (e) {
      return this.retryPublish(body, key, attempt, e);
    }
    if (res.status === 201) return (await res.json()).id;
    const err = await errorFrom(res);
    if (res.status >= 500 || res.status === 429) return this.retryPublish(body, key, attempt, err);
    throw err;
  }

  async retryPublish(body, key, attempt, err) {
    if (this.closed || attempt >= 6) throw err;
    await sleep(backoffDelay(attempt));
    // Same key: if the first try was stored, the hub answers with its id.
    return this.publishHttp(body, key, attempt + 1);
  }

  authHeader() {
    return this.token ? { Authorization: `Bearer ${this.token}` } : {};
  }

  endpoint(path, params = {}) {
    const u = new URL(`${this.url}${path}`);
    if (u.protocol === 'https:' && path === '/ws') u.protocol = 'wss:';
    else if (u.protocol === 'http:' && path === '/ws') u.protocol = 'ws:';
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined) u.searchParams.set(k, v);
    if (this.token && path !== '/messages') u.searchParams.set('token', this.token);
    return u.toString();
  }

  open() {
    if (this.closed) return;
    const transport = this.candidates[0];
    this.setStatus(this.attempt === 0 && this.lastOpened === undefined ? 'connecting' : 'reconnecting');
    const handlers = {
      opened: () => {
        this.attempt = 0;
        this.lastOpened = transport;
        this.setStatus('open');
      },
      failed: (err, { everOpened }) => this.onFailure(transport, err, everOpened),
    };
    if (transport === 'ws') this.conn = new SocketConnection(this, handlers);
    else if (transport === 'sse') this.conn = new StreamConnection(this, handlers);
    else this.conn = new PollConnection(this, handlers);
  }

  onFailure(transport, err, everOpened) {
    if (this.closed) return;
    this.conn = null;
    if (err?.fatal) {
      this.emit('error', err);
      this.shutdown('closed', err);
      return;
    }
    // In auto mode a transport that never connected is skipped, unless it
    // is the last one left (then keep retrying it).
    if (this.auto && !everOpened && this.lastOpened === undefined && this.candidates.length > 1) {
      this.candidates.shift();
      if (this.transport !== 'ws') this.failPendingToHttp();
      this.open();
      return;
    }
    if (this.transport !== 'ws') this.failPendingToHttp();
    const delay = backoffDelay(this.attempt++);
    this.setStatus('reconnecting', { retryInMs: Math.round(delay) });
    this.timer = setTimeout(() => this.open(), delay);
  }

  failPendingToHttp() {
    // Publishes waiting on a WebSocket that is gone for good go over HTTP
    // with the same key, so nothing is stored twice.
    for (const [cid, p] of this.pending) {
      const { type, cid: _c, ...body } = JSON.parse(p.frame);
      this.publishHttp(body, cid).then(p.resolve, p.reject);
    }
    this.pending.clear();
  }

  shutdown(state, err) {
    this.closed = true;
    clearTimeout(this.timer);
    this.conn?.close();
    this.conn = null;
    for (const p of this.pending.values()) p.reject(err ?? new HubError('closed', 'the room is closed'));
    this.pending.clear();
    this.setStatus(state, err ? { error: err.code } : {});
  }

  /** Closes the room's connection for good. */
  close() {
    if (!this.closed) this.shutdown('closed');
  }
}

class SocketConnection {
  constructor(room, { opened, failed }) {
    this.room = room;
    this.ready = false;
    let everOpened = false;
    let done = false;
    const fail = (err) => {
      if (done) return;
      done = true;
      clearTimeout(timeout);
      this.ready = false;
      try {
        this.ws.close();
      } catch (_) {}
      failed(err, { everOpened });
    };
    const timeout = setTimeout(() => fail(new HubError('timeout', 'no welcome from the hub')), CONNECT_TIMEOUT_MS);
    this.ws = new WebSocket(room.endpoint('/ws', { since: room.lastId }));
    this.ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (_) {
        return;
      }
      switch (msg.type) {
        case 'welcome':
          clearTimeout(timeout);
          everOpened = true;
          this.ready = true;
          if (room.lastId === null) room.lastId = msg.last_id;
          room.presence = msg.presence;
          room.presenceCount = msg.presence_count ?? msg.presence.length;
          room.emit('presence', room.presence);
          opened();
          for (const p of room.pending.values()) this.ws.send(p.frame);
          break;
        case 'message':
          room.deliver(msg);
          break;
        case 'ack': {
          const p = room.pending.get(msg.cid);
          if (p) {
            room.pending.delete(msg.cid);
            p.resolve(msg.id);
          }
          break;
        }
        case 'reset':
          room.signalReset({ reason: msg.reason, first_id: msg.first_id });
          break;
        case 'join':
          if (!room.presence.includes(msg.user)) {
            room.presence = [...room.presence, msg.user].sort();
            room.presenceCount = room.presence.length;
          }
          room.emit('join', msg.user);
          room.emit('presence', room.presence);
          break;
        case 'leave':
          room.presence = room.presence.filter((u) => u !== msg.user);
          room.presenceCount = room.presence.length;
          room.emit('leave', msg.user);
          room.emit('presence', room.presence);
          break;
        case 'presence':
          room.presence = msg.members;
          room.presenceCount = msg.count ?? msg.members.length;
          room.emit('presence', room.presence);
          break;
        case 'error': {
          const err = new HubError(msg.code, msg.message);
          room.emit('error', err);
          // An error answers the oldest publish still waiting (the hub
          // answers frames in order); rate limits are retried later.
          const first = room.pending.entries().next().value;
          if (first && msg.code === 'rate_limited') {
            setTimeout(() => this.ready && this.send(first[1].frame), 1000);
          } else if (first) {
            room.pending.delete(first[0]);
            first[1].reject(err);
          }
          break;
        }
        default:
      }
    };
    this.ws.onclose = (ev) => {
      const fatal = FATAL_CLOSE_CODES.has(ev.code);
      fail(Object.assign(new HubError(`close_${ev.code}`, ev.reason || 'connection closed'), { fatal }));
    };
    this.ws.onerror = () => {
      /* onclose follows */
    };
  }

  send(frame) {
    try {
      this.ws.send(frame);
    } catch (_) {
      /* resent after the next welcome */
    }
  }

  close() {
    this.ready = false;
    this.ws.onclose = null;
    try {
      this.ws.close(1000);
    } catch (_) {}
  }
}

class StreamConnection {
  constructor(room, { opened, failed }) {
    this.abort = new AbortController();
    this.run(room, opened, failed);
  }

  async run(room, opened, failed) {
    let everOpened = false;
    const timeout = setTimeout(() => this.abort.abort(), CONNECT_TIMEOUT_MS);
    try {
      // Live only without a cursor: learn where the log stands first, so a
      // reconnect before the first message still resumes without a gap.
      if (room.lastId === null) room.lastId = await currentLastId(room, this.abort.signal);
      const headers = { Accept: 'text/event-stream' };
      if (room.lastId !== null) headers['Last-Event-ID'] = String(room.lastId);
      const res = await fetch(room.endpoint('/events', { since: room.lastId }), {
        headers,
        signal: this.abort.signal,
        cache: 'no-store',
      });
      if (res.status !== 200) {
        const err = await errorFrom(res);
        err.fatal = FATAL_STATUSES.has(res.status);
        clearTimeout(timeout);
        return failed(err, { everOpened });
      }
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const frame = parseSseBlock(block);
          if (frame.retry !== undefined && !everOpened) {
            // The hub sends `retry:` first: the stream is established.
            clearTimeout(timeout);
            everOpened = true;
            opened();
          }
          if (frame.event === 'reset') room.signalReset(JSON.parse(frame.data));
          else if (frame.data) room.deliver(JSON.parse(frame.data));
        }
      }
      clearTimeout(timeout);
      failed(new HubError('stream_ended', 'the event stream ended'), { everOpened });
    } catch (e) {
      clearTimeout(timeout);
      if (this.closed) return;
      failed(e instanceof HubError ? e : new HubError('network', String(e?.message ?? e)), { everOpened });
    }
  }

  close() {
    this.closed = true;
    this.abort.abort();
  }
}

class PollConnection {
  constructor(room, { opened, failed }) {
    this.abort = new AbortController();
    this.run(room, opened, failed);
  }

  async run(room, opened, failed) {
    let everOpened = false;
    let etag = null;
    try {
      for (;;) {
        const params = { limit: POLL_LIMIT };
        if (room.lastId === null) params.limit = 1;
        else params.since = room.lastId;
        if (everOpened && room.lastId !== null && !room.pollIntervalMs) params.wait = LONG_POLL_WAIT_S;
        const headers = { ...room.authHeader() };
        if (etag) headers['If-None-Match'] = etag;
        const res = await fetch(room.endpoint('/messages', params), {
          headers,
          signal: this.abort.signal,
          cache: 'no-store',
        });
        if (res.status !== 200 && res.status !== 304) {
          const err = await errorFrom(res);
          err.fatal = FATAL_STATUSES.has(res.status);
          return failed(err, { everOpened });
        }
        if (!everOpened) {
          everOpened = true;
          opened();
        }
        if (res.status === 200) {
          etag = res.headers.get('ETag');
          const body = await res.json();
          if (room.lastId === null) {
            room.lastId = body.last_id; // live from now on, as the other transports
          } else {
            if (body.reset) room.signalReset(body.reset);
            for (const m of body.messages) room.deliver(m);
            // More than one page behind: fetch the next page at once.
            if (body.messages.length === POLL_LIMIT) continue;
          }
        }
        if (room.pollIntervalMs) await sleep(room.pollIntervalMs, this.abort.signal);
      }
    } catch (e) {
      if (this.closed) return;
      failed(new HubError('network', String(e?.message ?? e)), { everOpened });
    }
  }

  close() {
    this.closed = true;
    this.abort.abort();
  }
}

async function currentLastId(room, signal) {
  const res = await fetch(room.endpoint('/messages', { limit: 1 }), {
    headers: room.authHeader(),
    cache: 'no-store',
    signal,
  });
  if (!res.ok) {
    const err = await errorFrom(res);
    err.fatal = FATAL_STATUSES.has(res.status);
    throw err;
  }
  return (await res.json()).last_id;
}

function parseSseBlock(block) {
  const frame = {};
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') frame.data = frame.data === undefined ? value : `${frame.data}\n${value}`;
    else if (field === 'event') frame.event = value;
    else if (field === 'id') frame.id = value;
    else if (field === 'retry') frame.retry = Number(value);
  }
  return frame;
}

async function errorFrom(res) {
  let body = null;
  try {
    body = await res.json();
  } catch (_) {}
  return new HubError(body?.error ?? `http_${res.status}`, body?.message ?? res.statusText, res.status);
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      reject(new Error('aborted'));
    });
  });
}
