// Helpers the test files share, so each is written once:
//
// - waiting: WAIT_MS, sleep, withTimeout, waitFor;
// - failure messages and data: show, safeMatch, range;
// - rooms: roomName, a fresh room per test;
// - HTTP: publish, getJson, request (fetch), readResponse (a `node:http`
//   answer), roomState, mustPublish;
// - received items: Inbox, a buffer of what a client received, handed out
//   by `next(predicate)`;
// - WebSocket: wsUrl, WsClient (a WebSocket test client built on Inbox and
//   scripts/clients/ws.mjs) with closeWsClients, refusedUpgrade and
//   readRefusal for refused upgrades;
// - Server-Sent Events: SseClient (a `node:http` stream read by
//   scripts/clients/sse.mjs into an Inbox) with closeSseClients.
//
// What a single spec needs only for itself (tokens, resuming subscribers,
// assertions on one transport's frames) stays in that spec.
// Starting and stopping the hub is scripts/launch/'s job (startHub in
// scripts/launch/hub.mjs), shared with the benchmarks.
import assert from 'node:assert/strict';
import { before, after, afterEach } from 'node:test';
import { startHub } from '../scripts/launch/hub.mjs';
import http from 'node:http';
import { openSocket } from '../scripts/clients/ws.mjs';
import { readSse } from '../scripts/clients/sse.mjs';

// ---------------------------------------------------------------- waiting

/** How long any single awaited event may take (frames, closes, upgrades) unless a test says otherwise. */
export const WAIT_MS = 10_000;

/** Resolves after `ms` milliseconds. */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * `promise`, or a rejection "timed out after `ms` ms waiting for `what`" if
 * it has not settled by then. The timer is cleared either way.
 */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Retries `check` (async, truthy when done) every 50 ms until it holds or
 * `ms` pass; resolves to `{ value, elapsed }` (the truthy result and the ms
 * it took). On timeout the assertion names `what`, followed by `lastSeen()`
 * (e.g. " (last seen 3)") so the failure says what was seen instead.
 */
export async function waitFor(check, ms, what, lastSeen = () => '') {
  const started = Date.now();
  const deadline = started + ms;
  while (Date.now() < deadline) {
    const value = await check();
    if (value) return { value, elapsed: Date.now() - started };
    await sleep(50);
  }
  assert.fail(`timed out after ${ms} ms waiting for ${what}${lastSeen()}`);
}

// ---------------------------------------------------------------- messages and data

/** Short, readable JSON rendering of a value for failure messages (strings quoted, so `\n` shows). */
export function show(value) {
  const text = JSON.stringify(value);
  return text && text.length > 300 ? `${text.slice(0, 300)}…(${text.length} chars)` : text;
}

/** `pred(item)` as a boolean; a predicate that throws (e.g. on a non-object frame) does not match. */
export function safeMatch(pred, item) {
  try {
    return Boolean(pred(item));
  } catch {
    return false;
  }
}

/** The integers `from..to`, both included (empty when `to < from`). */
export function range(from, to) {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
}

// ---------------------------------------------------------------- rooms

/** A unique room name per test, so tests never see each other's messages. */
let roomCounter = 0;
export function roomName(prefix = 'room') {
  roomCounter += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${roomCounter}`;
}

// ---------------------------------------------------------------- HTTP

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

/** Raw fetch; resolves to { status, text, body (parsed JSON, null if empty, undefined if not JSON), headers }. */
export async function request(url, path, init = {}) {
  const res = await fetch(`${url}${path}`, init);
  const text = await res.text();
  let body = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined; // not JSON: assertions on `body` will say so
    }
  }
  return { status: res.status, text, body, headers: res.headers };
}

/**
 * Reads a whole `node:http` response (an answer that is not a stream):
 * resolves to { status, text, body (parsed JSON, or undefined), headers }.
 */
export function readResponse(res) {
  return new Promise((resolve) => {
    const chunks = [];
    res.on('data', (c) => chunks.push(c));
    res.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body;
      try {
        body = JSON.parse(text);
      } catch {
        body = undefined;
      }
      resolve({ status: res.statusCode, text, body, headers: res.headers });
    });
  });
}

/** GET /rooms/{room} on an open hub; asserts 200 and returns the state. */
export async function roomState(url, room) {
  const res = await getJson(url, `/rooms/${room}`);
  assert.equal(res.status, 200, `GET /rooms/${room}: ${JSON.stringify(res.body)}`);
  return res.body;
}

/** Publishes over HTTP (with extra `headers`) and asserts 201; returns { id, ts }. */
export async function mustPublish(url, room, payload, headers = {}) {
  const res = await publish(url, room, payload, headers);
  assert.equal(res.status, 201, `publish to ${room}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

// ---------------------------------------------------------------- WebSocket

/** The WebSocket URL of `room` on the hub at `url`; `query` is appended as is (e.g. '?since=2'). */
export function wsUrl(url, room, query = '') {
  return `${url.replace(/^http/, 'ws')}/rooms/${room}/ws${query}`;
}

/** `url` with the value of a `token=` parameter hidden, for labels and failure messages. */
function redactToken(url) {
  return url.replace(/token=[^&]*/, 'token=…');
}

/**
 * A buffered list of everything a client received, in arrival order, with
 * `next(pred)`: the first buffered or future item matching `pred` that no
 * earlier `next` took, within a timeout. `end(reason)` fails every pending
 * and later wait at once. Failure messages list the items seen (`describe`
 * may be replaced to render them shorter) and `state()`.
 */
export class Inbox {
  constructor(label) {
    this.label = label;
    /** Every item in arrival order. */
    this.items = [];
    /** Indexes of items already returned by `next`. */
    this.taken = new Set();
    /** Pending `next` calls: { pred, resolve, reject, timer, what }. */
    this.waiters = [];
    this.endReason = null;
    /** Functions called with every item (see `onItem`). */
    this.listeners = [];
  }

  /**
   * Calls `fn(item)` for every item, those already buffered first, as it
   * arrives (for clients that react to items rather than await them). It
   * takes nothing: `next` still sees every item.
   */
  onItem(fn) {
    for (const item of this.items) fn(item);
    this.listeners.push(fn);
  }

  push(item) {
    const index = this.items.push(item) - 1;
    for (const fn of this.listeners) fn(item);
    for (const w of this.waiters) {
      if (safeMatch(w.pred, item)) {
        this.taken.add(index);
        this.#settle(w);
        w.resolve(item);
        break;
      }
    }
  }

  /** No more items can arrive: fail every pending wait now. */
  end(reason) {
    if (this.endReason) return;
    this.endReason = reason;
    for (const w of [...this.waiters]) {
      this.#settle(w);
      w.reject(new Error(`${this.label} ended (${reason}) while waiting for ${w.what}; ${this.seen()}`));
    }
  }

  #settle(w) {
    clearTimeout(w.timer);
    this.waiters = this.waiters.filter((x) => x !== w);
  }

  /** A description of the items seen so far (the last 40), for failure messages. */
  seen() {
    const list = this.items.slice(-40).map((f, i, arr) => {
      const index = this.items.length - arr.length + i;
      return `  #${index}${this.taken.has(index) ? ' (taken)' : ''} ${show(this.describe(f))}`;
    });
    const more = this.items.length > 40 ? `  (${this.items.length - 40} earlier items not shown)\n` : '';
    const state = this.state();
    return `${this.items.length} item(s) on ${this.label}${state ? ` (${state})` : ''}:\n${more}${list.join('\n')}`;
  }

  /** How an item is rendered in `seen()`. */
  describe(item) {
    return item;
  }

  /** The source's state for `seen()`; empty while nothing is known. */
  state() {
    return this.endReason ? `ended: ${this.endReason}` : '';
  }

  /** The next not-yet-taken item matching `pred`, within `ms`. */
  next(pred, what = String(pred), ms = WAIT_MS) {
    for (let i = 0; i < this.items.length; i += 1) {
      if (!this.taken.has(i) && safeMatch(pred, this.items[i])) {
        this.taken.add(i);
        return Promise.resolve(this.items[i]);
      }
    }
    if (this.endReason) {
      return Promise.reject(new Error(`${this.label} already ended (${this.endReason}) waiting for ${what}; ${this.seen()}`));
    }
    return new Promise((resolve, reject) => {
      const w = { pred, resolve, reject, what };
      w.timer = setTimeout(() => {
        this.#settle(w);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}; ${this.seen()}`));
      }, ms);
      this.waiters.push(w);
    });
  }
}

/** Every WsClient not yet closed, so `closeWsClients` can end the ones a test left open. */
const openWsClients = new Set();

/**
 * A WebSocket test client that buffers every frame from the moment the
 * socket is created, and hands them out with `next(predicate)` (see Inbox).
 * Frames are parsed JSON, or the raw text when not JSON (e.g. `pong`), or
 * `{binary: <base64>}` for binary frames. `url` (any token redacted) names
 * the socket in failure messages; `wsOptions` go to the `ws` constructor
 * (headers, origin, ...).
 */
export class WsClient extends Inbox {
  constructor(url, wsOptions = {}) {
    super(redactToken(url));
    this.url = this.label;
    this.errors = [];
    this.closeInfo = null;
    this.ws = openSocket(url, { handshakeTimeout: WAIT_MS, ...wsOptions, onFrame: (frame) => this.push(frame) });
    openWsClients.add(this);

    this.ws.on('error', (err) => this.errors.push(err));
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      // No 'unexpected-response' listener here: without one, `ws` reports a
      // refused upgrade as an 'error' (rejecting `opened`), and a caller may
      // add its own listener to read the refusal's status and body.
      this.ws.once('error', reject);
      this.ws.once('close', (code) => reject(new Error(`closed (${code}) before open: ${this.url}`)));
    });
    this.opened.catch(() => {}); // observed by `connect`; never an unhandled rejection
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString('utf8') };
        openWsClients.delete(this);
        // No frame can arrive any more: fail every pending wait now.
        this.end(`socket closed ${code} ${this.closeInfo.reason}`.trim());
        resolve(this.closeInfo);
      });
    });
  }

  /** Opens a socket to the full WebSocket URL `target` and waits for the upgrade to complete. */
  static async connect(target, wsOptions = {}) {
    const client = new WsClient(target, wsOptions);
    await withTimeout(client.opened, WAIT_MS, `upgrade of ${client.url}`);
    return client;
  }

  /** Opens a socket to `room` (`query` as in `wsUrl`) and waits for the upgrade to complete. */
  static open(url, room, query = '') {
    return WsClient.connect(wsUrl(url, room, query));
  }

  /** `connect`, then the welcome: resolves to { client, welcome }, asserting the welcome is the first frame. */
  static async welcomedAt(target, wsOptions = {}) {
    const client = await WsClient.connect(target, wsOptions);
    const welcome = await client.next((f) => f.type === 'welcome', 'welcome');
    assert.equal(client.frames[0], welcome, `welcome is the first frame; ${client.seen()}`);
    return { client, welcome };
  }

  /** Opens a socket to `room` (`query` as in `wsUrl`) and returns it with its (first) welcome frame. */
  static welcomed(url, room, query = '') {
    return WsClient.welcomedAt(wsUrl(url, room, query));
  }

  /** Every frame in arrival order. */
  get frames() {
    return this.items;
  }

  /** The welcome frame (the first frame of an accepted socket), once it arrived. */
  get welcome() {
    return this.ofType('welcome')[0];
  }

  /** The socket's state for `seen()`: its close code and reason, or its readyState. */
  state() {
    return this.closeInfo ? `closed ${this.closeInfo.code} ${this.closeInfo.reason}` : `readyState ${this.ws.readyState}`;
  }

  nextType(type, ms) {
    return this.next((f) => f.type === type, `a "${type}" frame`, ms);
  }

  nextMessage(id, ms) {
    return this.next((f) => f.type === 'message' && f.id === id, `message id ${id}`, ms);
  }

  nextAck(cid, ms) {
    return this.next((f) => f.type === 'ack' && f.cid === cid, `ack for cid ${cid}`, ms);
  }

  /** Every frame of one type seen so far (taken or not), in order. */
  ofType(type) {
    return this.frames.filter((f) => f && f.type === type);
  }

  messageIds() {
    return this.ofType('message').map((m) => m.id);
  }

  /** Sends a string or Buffer as is, anything else as JSON. */
  send(frame) {
    this.ws.send(typeof frame === 'string' || Buffer.isBuffer(frame) ? frame : JSON.stringify(frame));
  }

  /** Publishes over the socket and waits for the ack; asserts it is not an error frame; returns the ack. */
  async publish(data, { cid, event } = {}) {
    assert.ok(cid, 'publish helper needs a cid to match its ack');
    const frame = { type: 'publish', data, cid };
    if (event !== undefined) frame.event = event;
    this.send(frame);
    const ack = await this.next((f) => (f.type === 'ack' && f.cid === cid) || f.type === 'error', `ack for cid ${cid}`);
    assert.equal(ack.type, 'ack', `publish ${cid} answered ${show(ack)}`);
    return ack;
  }

  /** Sends a publish frame; resolves to the first ack for `cid` or error frame, unchecked. */
  publishFrame(data, cid) {
    this.send({ type: 'publish', data, cid });
    return this.next((f) => (f.type === 'ack' && f.cid === cid) || f.type === 'error', `ack or error for cid ${cid}`);
  }

  /** Waits for the socket to be closed (by either side), within `ms`. */
  waitClosed(ms = WAIT_MS) {
    return withTimeout(this.closed, ms, `close of ${this.url}; ${this.seen()}`);
  }

  /**
   * Waits for the hub's close frame, within `ms`: { code, reason }. The
   * `ws` client keeps it (`_closeFrameReceived`, `_closeCode`, ws 8) before
   * the TCP connection ends, which local workerd may delay for a close the
   * room starts outside that socket's own event (see the README's limits).
   */
  async closeFrame(ms = WAIT_MS) {
    await waitFor(() => this.ws._closeFrameReceived, ms, `the close frame of ${this.url}`);
    return { code: this.ws._closeCode, reason: this.ws._closeMessage.toString() };
  }

  /** Whether the hub's close frame arrived. */
  get closeFrameReceived() {
    return this.ws._closeFrameReceived;
  }

  /** Closes from the client side and waits for the close to complete. */
  async close(code = 1000) {
    if (!this.closeInfo) this.ws.close(code);
    return this.waitClosed();
  }
}

/** Terminates every WsClient a test left open and waits for their closes (for afterEach). */
export async function closeWsClients() {
  const clients = [...openWsClients];
  for (const c of clients) c.ws.terminate();
  await Promise.all(clients.map((c) => withTimeout(c.closed, WAIT_MS, `terminate ${c.url}`).catch(() => {})));
}

/**
 * Reads the HTTP answer of a refused upgrade (the `ws` client's
 * 'unexpected-response' event) as `readResponse` does, then destroys the
 * request.
 */
export async function readRefusal(req, res) {
  const refusal = await readResponse(res);
  req.destroy();
  return refusal;
}

/**
 * Attempts an upgrade of `target` (a full WebSocket URL) expected to be
 * refused; resolves to the refusal as `readRefusal` reads it, and fails if
 * the socket opens (a 101).
 */
export function refusedUpgrade(target, wsOptions = {}) {
  const label = redactToken(target);
  return withTimeout(new Promise((resolve, reject) => {
    const ws = openSocket(target, { handshakeTimeout: WAIT_MS, ...wsOptions });
    ws.on('error', () => {});
    ws.once('open', () => {
      ws.terminate();
      reject(new Error(`upgrade of ${label} succeeded (101); expected a refusal`));
    });
    ws.once('unexpected-response', (req, res) => {
      readRefusal(req, res).then(resolve);
    });
  }), WAIT_MS, `refused upgrade of ${label}`);
}

// ---------------------------------------------------------------- Server-Sent Events

/** Every SseClient not yet ended, so `closeSseClients` can end the ones a test left open. */
const openSseClients = new Set();

/**
 * A Server-Sent Events test client on `node:http` (its own connection):
 * GET `url` + `path` with `headers`, and, on a 200, every item of the
 * stream (see scripts/clients/sse.mjs: events, comments, retry lines)
 * buffered in arrival order and handed out by `next(predicate)` (see
 * Inbox). The Inbox ends when the stream does, so a dropped stream fails
 * every wait at once.
 *
 * Kept for byte-level checks: `raw`, the stream's text as received, and
 * `bytes`, how many bytes came; for a refusal (not 200), `body` and
 * `refusal()`. `status` and `headers` are the answer's; `ended` resolves
 * with why the stream ended.
 */
export class SseClient extends Inbox {
  constructor(url, path, headers = {}) {
    super(`SSE ${redactToken(path)}`);
    this.status = null;
    this.headers = null;
    this.raw = '';
    this.bytes = 0;
    this.body = '';
    openSseClients.add(this);
    this.ended = new Promise((resolve) => {
      this.resolveEnded = resolve;
    });
    this.req = http.get(`${url}${path}`, { agent: false, headers: { Accept: 'text/event-stream', ...headers } });
    this.response = new Promise((resolve, reject) => {
      this.req.once('response', (res) => {
        this.res = res;
        this.status = res.statusCode;
        this.headers = res.headers;
        const decoder = new TextDecoder();
        res.on('data', (chunk) => {
          this.bytes += chunk.length;
          const text = decoder.decode(chunk, { stream: true });
          if (this.status === 200) this.raw += text;
          else this.body += text;
        });
        // The reader gets the same chunks (after the listener above, so `raw` already holds an item's bytes when it is pushed).
        if (this.status === 200) readSse(res, (item) => this.push(item));
        res.once('end', () => this.#ended('end of body'));
        res.once('error', (err) => this.#ended(`response error: ${err.message}`));
        res.once('close', () => this.#ended('response closed'));
        resolve(this);
      });
      this.req.once('error', (err) => {
        this.#ended(`request error: ${err.message}`);
        reject(err);
      });
    });
    this.response.catch(() => {}); // observed by `open`; never an unhandled rejection
  }

  #ended(reason) {
    if (this.endReason) return;
    openSseClients.delete(this);
    this.end(reason);
    this.resolveEnded(reason);
  }

  /** Opens a stream and waits (within `ms`) for the answer's head, whatever its status. */
  static async open(url, path, headers = {}, ms = WAIT_MS) {
    const client = new SseClient(url, path, headers);
    try {
      await withTimeout(client.response, ms, `the answer to ${client.label}`);
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  /** `open`, asserting a 200 (a refusal fails with its status and body). */
  static async connect(url, path, headers = {}) {
    const client = await SseClient.open(url, path, headers);
    if (client.status !== 200) {
      const refusal = await client.refusal();
      assert.fail(`${client.label}: ${refusal.status} ${show(refusal.text)}`);
    }
    return client;
  }

  /** A refused stream's whole answer: { status, text, body (parsed JSON, or undefined), headers }, as readResponse gives it. */
  async refusal() {
    await withTimeout(this.ended, WAIT_MS, `the end of the refusal of ${this.label}`);
    let body;
    try {
      body = JSON.parse(this.body);
    } catch {
      body = undefined;
    }
    return { status: this.status, text: this.body, body, headers: this.headers };
  }

  /** The items that are events (not comments nor retry lines), in order. */
  events() {
    return this.items.filter((item) => item.kind === 'event');
  }

  /** Ids of every event with an `id:` line so far, as numbers. */
  ids() {
    return this.events().filter((e) => e.id !== undefined).map((e) => Number(e.id));
  }

  /** The next event with an `id:` line. */
  nextMessage(what = 'an event with an id', ms) {
    return this.next((e) => e.kind === 'event' && e.id !== undefined, what, ms);
  }

  /** The event with id `id`. */
  nextId(id, ms) {
    return this.next((e) => e.kind === 'event' && e.id === String(id), `event id ${id}`, ms);
  }

  /** The stream's state for `seen()`: its status and, once over, why it ended. */
  state() {
    return [this.status === null ? 'no answer yet' : `status ${this.status}`, this.endReason && `ended: ${this.endReason}`].filter(Boolean).join(', ');
  }

  /** Ends the client side: destroys the connection (the Inbox ends with it). */
  close() {
    this.req.destroy();
    this.#ended('closed by the test');
  }
}

/** Ends every SseClient a test left open (for afterEach). */
export function closeSseClients() {
  for (const c of [...openSseClients]) c.close();
}

/**
 * The hub of one `describe` block: `startHub(options)` before its first
 * test, stopped after its last. After each test, every test client still
 * open (WsClient, SseClient) is closed and `cleanup` (if given) runs.
 * Returns the hub's handle, filled in once it runs: read `hub.url` inside
 * tests and hooks, not at describe time.
 */
export function suiteHub(options, { cleanup } = {}) {
  const hub = {};
  const closeClients = async () => {
    closeSseClients();
    await closeWsClients();
    await cleanup?.();
  };
  before(async () => {
    Object.assign(hub, await startHub(options));
  });
  afterEach(closeClients);
  after(async () => {
    await closeClients();
    await hub.stop?.();
  });
  return hub;
}
