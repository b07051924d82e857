// Reliability of the hub under faults and load, on the built Worker running
// on bare workerd (scripts/launch/workerd.mjs), real processes on loopback:
//
// 1. SIGKILL mid-traffic and a restart on the same storage: acknowledged
//    means stored, retried publishes (same Idempotency-Key / cid) are stored
//    once, ids are never reused, and subscribers on every transport resume by
//    id with no gap and no duplicate.
// 2. Concurrent publishers (HTTP and WebSocket) on one room: one order, seen
//    identically on every transport; retries never stored twice.
// 3. Hibernation under load: 40 sockets survive a hibernation and a wake with
//    their identities, and every one of them gets what is published after.
// 4. Dead WebSocket clients (TCP drop, no close frame) leave the counts; clean
//    closes announce `leave`.
// 5. Storage stays bounded by HISTORY_LIMIT, and resumes from pruned ids get
//    an explicit `reset` on every transport.
//
// Run, from the repository root after `npm run build`:
//   node --test --test-timeout=180000 tests/reliability.test.mjs
// (HUB_BUILD_DIR=<dir> tests a copy of build/ instead.)
import { describe, test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { startHub } from '../scripts/launch/hub.mjs';
import { stateDir } from '../scripts/launch/state.mjs';
import { freePort } from '../scripts/launch/ports.mjs';
import { roomName, WAIT_MS, sleep, withTimeout, waitFor, show, range, WsClient, closeWsClients, SseClient, suiteHub } from './support.mjs';

// ---------------------------------------------------------------- helpers

/** Makes idempotency keys and cids unique to this run. */
const RUN = `${process.pid.toString(36)}${Date.now().toString(36)}`;

/** Describes where a list of ids departs from `expected` (for failure messages). */
function idDiff(ids, expected) {
  const seen = new Map();
  for (const id of ids) seen.set(id, (seen.get(id) ?? 0) + 1);
  const missing = expected.filter((id) => !seen.has(id));
  const dups = [...seen].filter(([, n]) => n > 1).map(([id, n]) => `${id}×${n}`);
  const extra = [...seen.keys()].filter((id) => !expected.includes(id));
  const disorder = [];
  for (let i = 1; i < ids.length; i += 1) if (ids[i] <= ids[i - 1]) disorder.push(`${ids[i - 1]}→${ids[i]}@${i}`);
  return `${ids.length} ids (expected ${expected.length}); missing [${missing.slice(0, 30)}]; duplicates [${dups.slice(0, 30)}]; ` +
    `unexpected [${extra.slice(0, 30)}]; out of order [${disorder.slice(0, 30)}]`;
}

/**
 * Lets code await a condition on state that changes on events: `changed()`
 * after every change, `until(fn)` resolves with fn's first truthy result
 * (fn may throw to fail the wait early), within `ms`.
 */
class Watch {
  constructor() {
    this.waiters = new Set();
  }

  changed() {
    for (const w of [...this.waiters]) this.#check(w);
  }

  #check(w) {
    let value;
    try {
      value = w.fn();
    } catch (err) {
      this.#settle(w);
      w.reject(err);
      return;
    }
    if (value) {
      this.#settle(w);
      w.resolve(value);
    }
  }

  #settle(w) {
    clearTimeout(w.timer);
    this.waiters.delete(w);
  }

  until(fn, ms, what, detail = () => '') {
    return new Promise((resolve, reject) => {
      const w = { fn, resolve, reject };
      w.timer = setTimeout(() => {
        this.#settle(w);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}${detail()}`));
      }, ms);
      this.waiters.add(w);
      this.#check(w);
    });
  }
}

/** Every resuming client a test started and did not end, so `killAll` can end them. */
const live = new Set();

/** Ends every resuming client, then every WebSocket a test left open. */
async function killAll() {
  for (const c of [...live]) c.kill();
  await closeWsClients();
}

/** A JSON request with a bounded wait; resolves to { status, body, headers }. */
async function httpJson(url, path, { method = 'GET', headers = {}, body, timeoutMs = WAIT_MS } = {}) {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: body === undefined ? headers : { 'Content-Type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

async function roomState(url, room) {
  const res = await httpJson(url, `/rooms/${room}`);
  assert.equal(res.status, 200, `GET /rooms/${room}: ${show(res.body)}`);
  return res.body;
}

/** The whole kept log of a room. */
async function fetchLog(url, room) {
  const res = await httpJson(url, `/rooms/${room}/messages?since=0&limit=1000`);
  assert.equal(res.status, 200, `GET /rooms/${room}/messages?since=0&limit=1000: ${show(res.body)}`);
  return res.body;
}

/** One POST that must answer 201; returns { id, ts }. */
async function mustPost(url, room, payload, headers = {}) {
  const res = await httpJson(url, `/rooms/${room}/messages`, { method: 'POST', body: payload, headers });
  assert.equal(res.status, 201, `publish to ${room}: ${res.status} ${show(res.body)}`);
  return res.body;
}

/**
 * A publish that is retried with the SAME Idempotency-Key after a network
 * error or a 5xx, with a small backoff, until a 201 (bounded by
 * `deadlineMs`). A 4xx is a real failure and is thrown at once.
 * Returns { id, attempts, replayed } (replayed: the 201 said Idempotent-Replayed).
 */
async function reliablePost(url, room, payload, key, stats, deadlineMs = 30_000) {
  const deadline = Date.now() + deadlineMs;
  let delay = 25;
  let attempts = 0;
  let lastError = '';
  for (;;) {
    attempts += 1;
    let res;
    try {
      res = await httpJson(url, `/rooms/${room}/messages`, {
        method: 'POST',
        body: payload,
        headers: { 'Idempotency-Key': key },
        timeoutMs: 5000,
      });
    } catch (err) {
      stats.networkErrors += 1;
      lastError = `${err.name}: ${err.cause?.code ?? err.cause?.message ?? err.message}`;
    }
    if (res) {
      if (res.status === 201) {
        const replayed = res.headers.get('idempotent-replayed') === 'true';
        if (attempts > 1) stats.retried += 1;
        if (replayed) stats.replayed += 1;
        return { id: res.body.id, attempts, replayed, at: Date.now() };
      }
      if (res.status < 500) {
        throw new Error(`publish ${key} answered ${res.status} ${show(res.body)} (attempt ${attempts})`);
      }
      stats.serverErrors += 1;
      lastError = `${res.status} ${show(res.body)}`;
    }
    if (Date.now() > deadline) {
      throw new Error(`publish ${key} not acknowledged within ${deadlineMs} ms after ${attempts} attempts; last: ${lastError}`);
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 400);
  }
}

const newPostStats = () => ({ networkErrors: 0, serverErrors: 0, retried: 0, replayed: 0 });

/** Total size in bytes of every file under `dir`, recursively. */
function dirSize(dir) {
  let total = 0;
  const files = [];
  const walk = (d) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else {
        total += st.size;
        files.push(`${p.slice(dir.length + 1)}=${st.size}`);
      }
    }
  };
  walk(dir);
  const db = files
    .filter((f) => !/-(wal|shm|journal)=/.test(f))
    .reduce((sum, f) => sum + Number(f.slice(f.lastIndexOf('=') + 1)), 0);
  return { total, db, files };
}

const wsBase = (url) => url.replace(/^http/, 'ws');

// ------------------------------------------------ resuming subscribers

/**
 * A subscriber with its own resume loop: after any drop it reconnects with
 * the last id it saw. Records every message id in arrival order (`ids`), the
 * data per id, every `reset`, and each (re)connection.
 */
class Subscriber {
  constructor(kind, label, since = 0) {
    this.kind = kind;
    this.label = label;
    this.ids = [];
    /** id -> JSON of the data first seen with it. */
    this.data = new Map();
    /** The same id delivered with different data (an id reused). */
    this.conflicts = [];
    this.resets = [];
    /** { at, since } per established connection (WS: welcome; SSE: 200 head; poll: first 200 after a failure). */
    this.connects = [];
    /** { at, why } per drop or failed attempt. */
    this.drops = [];
    this.errors = [];
    /** The resume cursor: the highest id seen (or the starting cursor). */
    this.last = since;
    this.stopped = false;
    this.watch = new Watch();
    live.add(this);
  }

  onMessage(envelope) {
    const { id } = envelope;
    this.ids.push(id);
    const json = JSON.stringify(envelope.data);
    if (!this.data.has(id)) this.data.set(id, json);
    else if (this.data.get(id) !== json) this.conflicts.push({ id, first: this.data.get(id), again: json });
    if (id > this.last) this.last = id;
    this.watch.changed();
  }

  onReset(reset) {
    this.resets.push({ ...reset, atLast: this.last, at: Date.now() });
    this.watch.changed();
  }

  onConnect(since) {
    this.connects.push({ at: Date.now(), since });
    this.watch.changed();
  }

  onDrop(why) {
    this.drops.push({ at: Date.now(), why });
  }

  describe() {
    const drops = this.drops.slice(-5).map((d) => d.why).join(' | ');
    return ` (${this.label}: last ${this.last}, ${this.ids.length} ids, ${this.connects.length} connects, ` +
      `${this.drops.length} drops [${drops}], resets ${show(this.resets)})`;
  }

  reached(id, ms = WAIT_MS) {
    return this.watch.until(() => this.last >= id, ms, `${this.label} to reach id ${id}`, () => this.describe());
  }

  connected(n = 1, ms = WAIT_MS) {
    return this.watch.until(() => this.connects.length >= n, ms, `${this.label} connection #${n}`, () => this.describe());
  }

  /** Runs `session` (resolves when the connection ends) until stopped. */
  async runLoop(session) {
    let delay = 25;
    while (!this.stopped) {
      const opened = await session();
      if (this.stopped) break;
      delay = opened ? 25 : Math.min(delay * 2, 400);
      await sleep(delay);
    }
  }

  async stop() {
    this.stopped = true;
    this.kill();
    await withTimeout(this.loop, WAIT_MS, `${this.label} resume loop to end`);
    live.delete(this);
  }
}

/** WebSocket subscriber: `/rooms/R/ws?since=<last>`, one WsClient per connection. */
class WsSubscriber extends Subscriber {
  constructor(url, room, label = 'ws', since = 0) {
    super('ws', label, since);
    this.url = `${wsBase(url)}/rooms/${room}/ws`;
    this.loop = this.runLoop(() => this.#session());
  }

  /** One connection; resolves to whether it was welcomed, once it closed. */
  #session() {
    const since = this.last;
    let opened = false;
    const client = new WsClient(`${this.url}?since=${since}`, { handshakeTimeout: 5000 });
    this.client = client;
    client.onItem((f) => {
      if (!f || typeof f !== 'object') {
        this.errors.push(`not JSON: ${show(f)}`);
        return;
      }
      if (f.type === 'welcome') {
        opened = true;
        this.onConnect(since);
      } else if (f.type === 'message') this.onMessage(f);
      else if (f.type === 'reset') this.onReset({ reason: f.reason, first_id: f.first_id });
      else if (f.type === 'error') this.errors.push(show(f));
    });
    client.ws.on('error', (err) => this.onDrop(`error ${err.code ?? err.message}`));
    return client.closed.then(({ code }) => {
      this.onDrop(`close ${code}`);
      return opened;
    });
  }

  kill() {
    this.stopped = true;
    this.client?.ws.terminate();
    live.delete(this);
  }
}

/** SSE subscriber: one SseClient per stream, resuming with `Last-Event-ID: <last>`. */
class SseSubscriber extends Subscriber {
  constructor(url, room, label = 'sse', since = 0) {
    super('sse', label, since);
    this.url = url;
    this.path = `/rooms/${room}/events`;
    this.loop = this.runLoop(() => this.#session());
  }

  /** One stream; resolves to whether it was opened (a 200), once it ended. */
  async #session() {
    const since = this.last;
    const client = new SseClient(this.url, this.path, { 'Last-Event-ID': String(since) });
    this.client = client;
    try {
      await withTimeout(client.response, 5000, 'the response head');
    } catch (err) {
      client.close();
      this.onDrop(`request error ${err.code ?? err.message}`);
      return false;
    }
    if (client.status !== 200) {
      const refusal = await client.refusal().catch((err) => ({ status: client.status, text: `${client.body} (${err.message})` }));
      this.onDrop(`status ${refusal.status} ${refusal.text.slice(0, 200)}`);
      return false;
    }
    this.onConnect(since);
    client.onItem((item) => this.#item(item));
    this.onDrop(await client.ended);
    return true;
  }

  #item(item) {
    if (item.kind === 'comment' || item.kind === 'retry') return;
    if (item.kind !== 'event') {
      this.errors.push(`unexpected line: ${show(item)}`);
      return;
    }
    if (item.json === undefined) {
      this.errors.push(`event data not JSON: ${show(item)}`);
      return;
    }
    if (item.event === 'reset') {
      if (item.id !== undefined) this.errors.push(`reset with an id line: ${show(item)}`);
      this.onReset(item.json);
    } else if (item.id !== undefined) {
      if (Number(item.id) !== item.json.id) this.errors.push(`id line ${item.id} but envelope id ${item.json.id}`);
      this.onMessage(item.json);
    } else {
      this.errors.push(`unexpected event: ${show(item)}`);
    }
  }

  kill() {
    this.stopped = true;
    this.client?.close();
    live.delete(this);
  }
}

/** Long-poller: `GET /rooms/R/messages?since=<last>&wait=<s>` in a loop. */
class PollSubscriber extends Subscriber {
  constructor(url, room, label = 'poll', waitSecs = 5) {
    super('poll', label);
    this.url = `${url}/rooms/${room}/messages`;
    this.waitSecs = waitSecs;
    this.polls = 0;
    this.failing = true; // until the first 200
    this.loop = this.#run();
  }

  async #run() {
    let delay = 25;
    while (!this.stopped) {
      this.ctrl = new AbortController();
      const since = this.last;
      try {
        const res = await fetch(`${this.url}?since=${since}&limit=1000&wait=${this.waitSecs}`, {
          signal: AbortSignal.any([this.ctrl.signal, AbortSignal.timeout((this.waitSecs + 10) * 1000)]),
        });
        const text = await res.text();
        if (res.status === 200) {
          this.polls += 1;
          if (this.failing) this.onConnect(since);
          this.failing = false;
          const body = JSON.parse(text);
          if (body.reset) this.onReset(body.reset);
          for (const m of body.messages) this.onMessage(m);
          delay = 25;
          continue;
        }
        this.onDrop(`status ${res.status} ${text.slice(0, 200)}`);
      } catch (err) {
        if (this.stopped) break;
        this.onDrop(`${err.name} ${err.cause?.code ?? err.cause?.message ?? err.message}`);
      }
      this.failing = true;
      await sleep(delay);
      delay = Math.min(delay * 2, 400);
    }
  }

  kill() {
    this.stopped = true;
    this.ctrl?.abort();
    live.delete(this);
  }
}

/**
 * A WebSocket publisher with its own reconnect loop. `publish(data, cid)`
 * resolves with the ack; every frame not yet acked is resent, with the same
 * cid, on each new connection.
 */
class WsPublisher {
  constructor(url, room, label) {
    this.label = label;
    this.url = `${wsBase(url)}/rooms/${room}/ws`;
    /** cid -> { frame, resolve, sends } in publish order. */
    this.pending = new Map();
    this.connects = [];
    this.drops = [];
    this.errors = [];
    this.resent = 0;
    this.strayAcks = [];
    this.stopped = false;
    this.watch = new Watch();
    live.add(this);
    this.loop = this.#run();
  }

  async #run() {
    let delay = 25;
    while (!this.stopped) {
      const opened = await this.#session();
      if (this.stopped) break;
      delay = opened ? 25 : Math.min(delay * 2, 400);
      await sleep(delay);
    }
  }

  /** One connection that resends every un-acked frame; resolves to whether it opened, once it closed. */
  #session() {
    let opened = false;
    const client = new WsClient(this.url, { handshakeTimeout: 5000 });
    this.client = client;
    client.ws.on('open', () => {
      opened = true;
      this.connects.push({ at: Date.now() });
      for (const entry of this.pending.values()) {
        if (entry.sends > 0) this.resent += 1;
        entry.sends += 1;
        client.send(entry.frame);
      }
      this.watch.changed();
    });
    client.onItem((f) => {
      if (!f || typeof f !== 'object') return;
      if (f.type === 'ack') {
        const entry = this.pending.get(f.cid);
        if (!entry) {
          this.strayAcks.push(f);
          return;
        }
        this.pending.delete(f.cid);
        entry.resolve({ id: f.id, sends: entry.sends, at: Date.now() });
      } else if (f.type === 'error') {
        this.errors.push(show(f));
      }
    });
    client.ws.on('error', (err) => this.drops.push({ at: Date.now(), why: `error ${err.code ?? err.message}` }));
    return client.closed.then(({ code }) => {
      this.drops.push({ at: Date.now(), why: `close ${code}` });
      return opened;
    });
  }

  connected(ms = WAIT_MS) {
    return this.watch.until(() => this.connects.length >= 1, ms, `${this.label} to connect`);
  }

  publish(data, cid, ms = 30_000) {
    assert.ok(!this.pending.has(cid), `${cid} is already pending`);
    const frame = JSON.stringify({ type: 'publish', data, cid });
    const acked = new Promise((resolve) => {
      const entry = { frame, resolve, sends: 0 };
      this.pending.set(cid, entry);
      if (this.client?.ws.readyState === this.client?.ws.OPEN) {
        entry.sends += 1;
        this.client.send(frame);
      }
    });
    return withTimeout(acked, ms, `ack for ${cid} on ${this.label} (connects ${this.connects.length}, ` +
      `drops ${this.drops.slice(-3).map((d) => d.why).join(' | ')}, errors ${this.errors.join(' | ')})`);
  }

  kill() {
    this.stopped = true;
    this.client?.ws.terminate();
    live.delete(this);
  }

  async stop() {
    this.kill();
    await withTimeout(this.loop, WAIT_MS, `${this.label} loop to end`);
  }
}

// ------------------------------------------------ plain WebSockets

/** Opens `n` WsClients on `room` in parallel, each welcomed (its `welcome` is set). */
function openSockets(url, room, n, query = '') {
  return Promise.all(Array.from({ length: n }, async () => (await WsClient.welcomed(url, room, query)).client));
}

// ================================================================ 1. SIGKILL

describe('crash and restart (SIGKILL) with publishers and subscribers on every transport', () => {
  afterEach(killAll);

  test('every acknowledged publish survives, is stored once, ids 1..N; every subscriber resumes with 1..N', async (t) => {
    const state = stateDir();
    const port = await freePort();
    const vars = { RATE_PER_SEC: '0' };
    let hub = await startHub({ runtime: 'workerd', port, stateDir: state.dir, vars });
    const hubs = [hub];
    t.after(async () => {
      await killAll();
      for (const h of hubs) await h.stop().catch(() => {});
      state.cleanup();
    });
    const { url } = hub;
    const room = roomName('crash');

    // Subscribers first, on every transport, each with its own resume loop.
    const wsSub = new WsSubscriber(url, room, 'ws subscriber');
    const sseSub = new SseSubscriber(url, room, 'sse subscriber');
    const pollSub = new PollSubscriber(url, room, 'long-poller', 5);
    const subs = [wsSub, sseSub, pollSub];
    await wsSub.connected();
    await sseSub.connected();
    await waitFor(async () => {
      const s = await roomState(url, room);
      return s.connections.ws === 1 && s.connections.sse === 1 && s.connections.poll === 1;
    }, WAIT_MS, 'one WS, one SSE stream and one held long poll in the room');

    // Publishers: two over HTTP (retry with the same Idempotency-Key), one
    // over WebSocket (resend un-acked frames with the same cid).
    const PER = 40;
    const CRASH_AFTER = 20;
    /** "p:n" -> { id, via, at } for every acknowledged publish. */
    const acked = new Map();
    const timeline = {};
    let crashing = null;
    const crashAndRestart = async () => {
      timeline.ackedAtKill = acked.size;
      timeline.killedAt = Date.now();
      await hub.crash();
      timeline.deadAt = Date.now();
      // A short fixed pause before the restart, as a supervisor would take.
      await sleep(300);
      const startAt = Date.now();
      hub = await startHub({ runtime: 'workerd', port, stateDir: state.dir, vars });
      hubs.push(hub);
      timeline.restartedAt = Date.now();
      timeline.startMs = timeline.restartedAt - startAt;
    };
    const onAck = (p, n, id, via) => {
      const key = `${p}:${n}`;
      assert.ok(!acked.has(key), `${key} acknowledged twice by the publisher loop`);
      const at = Date.now();
      acked.set(key, { id, via, at });
      if (timeline.restartedAt && at > timeline.restartedAt && !timeline.firstAckAfter) timeline.firstAckAfter = at;
      if (acked.size >= CRASH_AFTER && !crashing) {
        crashing = crashAndRestart();
        crashing.catch(() => {}); // awaited (and reported) after the publishers
      }
    };

    const postStats = { h1: newPostStats(), h2: newPostStats() };
    const httpPublisher = async (p) => {
      for (let n = 0; n < PER; n += 1) {
        const r = await reliablePost(url, room, { data: { p, n } }, `${RUN}-${room}-${p}-${n}`, postStats[p]);
        onAck(p, n, r.id, r.attempts > 1 ? `http after ${r.attempts} attempts${r.replayed ? ' (replayed)' : ''}` : 'http');
      }
    };
    const wsPub = new WsPublisher(url, room, 'ws publisher w1');
    await wsPub.connected();
    const wsPublisher = async () => {
      for (let n = 0; n < PER; n += 1) {
        const ack = await wsPub.publish({ p: 'w1', n }, `${RUN}-${room}-w1-${n}`);
        onAck('w1', n, ack.id, ack.sends > 1 ? `ws after ${ack.sends} sends` : 'ws');
      }
    };

    const started = Date.now();
    await withTimeout(Promise.all([httpPublisher('h1'), httpPublisher('h2'), wsPublisher()]), 90_000, 'the three publishers');
    assert.ok(crashing, `the crash was triggered (acks: ${acked.size})`);
    await withTimeout(crashing, 30_000, 'crash and restart');
    const published = Date.now();

    const total = 3 * PER;
    assert.equal(acked.size, total, 'every publish was acknowledged');

    // (a) The log: every acknowledged message exactly once, at its acked id; ids 1..N.
    const log = await fetchLog(url, room);
    const logIds = log.messages.map((m) => m.id);
    const byKey = new Map();
    for (const m of log.messages) {
      const key = `${m.data?.p}:${m.data?.n}`;
      byKey.set(key, [...(byKey.get(key) ?? []), m.id]);
    }
    const missing = [];
    const misplaced = [];
    for (const [key, a] of acked) {
      const ids = byKey.get(key) ?? [];
      if (ids.length === 0) {
        const now = log.messages.find((m) => m.id === a.id);
        missing.push(`${key} (acked id ${a.id} via ${a.via} at +${a.at - started} ms; id ${a.id} now holds ${show(now?.data)})`);
      } else if (ids.length !== 1 || ids[0] !== a.id) {
        misplaced.push(`${key}: acked id ${a.id} via ${a.via}, stored at [${ids}]`);
      }
    }
    const duplicated = [...byKey].filter(([, ids]) => ids.length > 1).map(([k, ids]) => `${k} at [${ids}]`);
    const unknown = [...byKey.keys()].filter((k) => !acked.has(k));

    const httpRetries = Object.entries(postStats)
      .map(([p, s]) => `${p}: ${s.networkErrors} network errors, ${s.serverErrors} 5xx, ${s.retried} publishes retried, ${s.replayed} answered Idempotent-Replayed`)
      .join('; ');
    t.diagnostic(`SIGKILL after ${timeline.ackedAtKill} acks (+${timeline.killedAt - started} ms); process gone ${timeline.deadAt - timeline.killedAt} ms after the signal; ` +
      `workerd restart took ${timeline.startMs} ms; listening again ${timeline.restartedAt - timeline.killedAt} ms after the kill (incl. 300 ms pause); ` +
      `first ack after the restart ${timeline.firstAckAfter ? timeline.firstAckAfter - timeline.killedAt : 'n/a'} ms after the kill; ` +
      `all ${total} acked ${published - started} ms after the first publish`);
    t.diagnostic(`retries: ${httpRetries}; ws publisher: ${wsPub.connects.length} connections, ${wsPub.resent} frame(s) resent with the same cid, ${wsPub.strayAcks.length} stray acks`);
    t.diagnostic(`log: ${log.messages.length} messages, last_id ${log.last_id}`);

    assert.deepEqual(missing, [], `acknowledged messages missing from the log after SIGKILL (a durability bug): ${missing.join('; ')}`);
    assert.deepEqual(misplaced, [], `acknowledged messages stored at another id or more than once: ${misplaced.join('; ')}`);
    assert.deepEqual(duplicated, [], `messages stored twice despite the same key/cid: ${duplicated.join('; ')}`);
    assert.deepEqual(unknown, [], 'nothing in the log that was not published');
    assert.deepEqual(logIds, range(1, total), `log ids are exactly 1..${total}: ${idDiff(logIds, range(1, total))}`);
    assert.equal(log.last_id, total);
    assert.deepEqual(wsPub.errors, [], 'no error frame to the WS publisher');

    const { N, logData } = await awaitBarrier(url, room, subs, log, (body) =>
      reliablePost(url, room, body, `${RUN}-${room}-barrier`, newPostStats()),
    );

    // (b) Every subscriber: exactly 1..N, in order, once; same data as the log; no reset.
    for (const s of subs) {
      const back = s.connects.find((c) => c.at > timeline.killedAt);
      t.diagnostic(`${s.label}: ${s.connects.length} connection(s) [since ${s.connects.map((c) => c.since).join(', ')}], ` +
        `${s.drops.length} drop/failed attempt(s); back ${back ? back.at - timeline.killedAt : 'n/a'} ms after the kill; resets ${show(s.resets)}`);
    }
    for (const s of subs) {
      assert.deepEqual(s.resets, [], `${s.label} got a reset (it should not: HISTORY_LIMIT 1000)${s.describe()}`);
      assert.deepEqual(s.ids, range(1, N), `${s.label} received ids exactly 1..${N}: ${idDiff(s.ids, range(1, N))}`);
      assert.deepEqual(s.conflicts, [], `${s.label}: an id delivered with two different data`);
      const wrong = [...s.data].filter(([id, json]) => logData.get(id) !== json).map(([id, json]) => `${id}: got ${json}, log ${logData.get(id)}`);
      assert.deepEqual(wrong, [], `${s.label}: data per id equals the log`);
      assert.deepEqual(s.errors, [], `${s.label}: protocol errors`);
    }
    // The crash really cut the streams: both long-lived subscribers resumed.
    assert.ok(wsSub.connects.length >= 2, `the WS subscriber reconnected${wsSub.describe()}`);
    assert.ok(sseSub.connects.length >= 2, `the SSE subscriber reconnected${sseSub.describe()}`);
    assert.ok(wsPub.connects.length >= 2, 'the WS publisher reconnected');

    const after = await roomState(url, room);
    t.diagnostic(`room after restart: last_id ${after.last_id}, loads ${after.loads}`);
    assert.equal(after.last_id, N);
    for (const s of subs) await s.stop();
    await wsPub.stop();
  });
});

/**
 * Publishes a barrier after the `log.messages.length` messages of `log`
 * (with `post(body)`) and waits until every subscriber has it: then nothing
 * older is still in flight. Checks that the log did not change meanwhile and
 * returns the barrier's id and the final log's data by id, as stored (the
 * hub re-serializes data, so object keys come back sorted: compare with
 * what it stored).
 */
async function awaitBarrier(url, room, subs, log, post) {
  const total = log.messages.length;
  const barrier = await post({ data: { p: 'barrier', n: 0 } });
  assert.equal(barrier.id, total + 1, 'the next id follows the log');
  await Promise.all(subs.map((s) => s.reached(barrier.id, 20_000)));
  const finalLog = await fetchLog(url, room);
  assert.deepEqual(finalLog.messages.slice(0, total), log.messages, 'the log did not change');
  assert.deepEqual(finalLog.messages[total]?.data, { p: 'barrier', n: 0 });
  return { N: barrier.id, logData: new Map(finalLog.messages.map((m) => [m.id, JSON.stringify(m.data)])) };
}

// ================================================================ 2. concurrency

describe('concurrent publishers on one room', () => {
  const hub = suiteHub({ runtime: 'workerd', vars: { RATE_PER_SEC: '0' } }, { cleanup: killAll });

  test('3 HTTP + 3 WS publishers × 30: one order 1..180 seen identically on every transport; retries stored once', async (t) => {
    const { url } = hub;
    const room = roomName('concurrent');
    const subs = [
      new WsSubscriber(url, room, 'ws subscriber A'),
      new WsSubscriber(url, room, 'ws subscriber B'),
      new SseSubscriber(url, room, 'sse subscriber A'),
      new SseSubscriber(url, room, 'sse subscriber B'),
      new PollSubscriber(url, room, 'long-poller', 5),
    ];
    const wsPubs = ['w0', 'w1', 'w2'].map((p) => new WsPublisher(url, room, `ws publisher ${p}`));
    await Promise.all(wsPubs.map((p) => p.connected()));
    await waitFor(async () => {
      const s = await roomState(url, room);
      return s.connections.ws === 5 && s.connections.sse === 2 && s.connections.poll === 1;
    }, WAIT_MS, '5 WS (2 subscribers, 3 publishers), 2 SSE, 1 held long poll');

    const PER = 30;
    const RETRY = range(0, 9).map((i) => i * 3); // 10 publishes retried
    const acked = new Map(); // "p:n" -> id
    const retryResults = [];
    const stats = newPostStats();
    const key = (p, n) => `${RUN}-${room}-${p}-${n}`;

    const httpPublisher = async (p) => {
      for (let n = 0; n < PER; n += 1) {
        const r = await reliablePost(url, room, { data: { p, n } }, key(p, n), stats);
        acked.set(`${p}:${n}`, r.id);
        if (p === 'h0' && RETRY.includes(n)) {
          // The same publish again after its 201: the first id, nothing stored.
          const again = await httpJson(url, `/rooms/${room}/messages`, {
            method: 'POST',
            body: { data: { p, n } },
            headers: { 'Idempotency-Key': key(p, n) },
          });
          retryResults.push({ key: `${p}:${n}`, first: r.id, status: again.status, id: again.body?.id, replayed: again.headers.get('idempotent-replayed') });
        }
      }
    };
    const wsPublisher = async (pub, p) => {
      // Every frame sent back to back; then the acks.
      const acks = await Promise.all(range(0, PER - 1).map((n) => pub.publish({ p, n }, key(p, n))));
      acks.forEach((a, n) => acked.set(`${p}:${n}`, a.id));
      if (p === 'w0') {
        const again = await Promise.all(RETRY.map((n) => pub.publish({ p, n }, key(p, n))));
        again.forEach((a, i) => retryResults.push({ key: `${p}:${RETRY[i]}`, first: acks[RETRY[i]].id, status: 'ack', id: a.id, replayed: 'n/a' }));
      }
    };

    const started = Date.now();
    await withTimeout(Promise.all([
      ...['h0', 'h1', 'h2'].map((p) => httpPublisher(p)),
      ...wsPubs.map((pub, i) => wsPublisher(pub, `w${i}`)),
    ]), 60_000, 'six publishers');
    const elapsed = Date.now() - started;
    const total = 6 * PER;
    t.diagnostic(`${total} publishes (+20 retries) from 6 concurrent publishers acknowledged in ${elapsed} ms; HTTP network retries ${stats.networkErrors}, 5xx ${stats.serverErrors}`);

    // Retries answered with the first id.
    assert.equal(retryResults.length, 20);
    for (const r of retryResults) {
      assert.equal(r.id, r.first, `retry of ${r.key} answered the first id: ${show(r)}`);
      if (r.status !== 'ack') {
        assert.equal(r.status, 201, show(r));
        assert.equal(r.replayed, 'true', `retry of ${r.key} says Idempotent-Replayed: ${show(r)}`);
      }
    }

    // Acks: 180 distinct ids, exactly 1..180.
    const ackIds = [...acked.values()].sort((a, b) => a - b);
    assert.deepEqual(ackIds, range(1, total), `acked ids: ${idDiff(ackIds, range(1, total))}`);

    // The log: exactly 180, each (p,n) once at its acked id, ids 1..180.
    const log = await fetchLog(url, room);
    assert.equal(log.messages.length, total, `the log holds exactly ${total} (retries stored nothing)`);
    assert.deepEqual(log.messages.map((m) => m.id), range(1, total));
    for (const m of log.messages) {
      assert.equal(acked.get(`${m.data.p}:${m.data.n}`), m.id, `log id ${m.id} holds ${show(m.data)}, acked at that id`);
    }
    // Each publisher's messages are stored in the order it sent them.
    for (const p of ['h0', 'h1', 'h2', 'w0', 'w1', 'w2']) {
      const ids = range(0, PER - 1).map((n) => acked.get(`${p}:${n}`));
      assert.deepEqual(ids, [...ids].sort((a, b) => a - b), `${p}'s messages stored in its send order: [${ids}]`);
    }

    const { N, logData } = await awaitBarrier(url, room, subs, log, (body) => mustPost(url, room, body));
    for (const s of subs) {
      assert.deepEqual(s.resets, [], `${s.label}: no reset${s.describe()}`);
      assert.deepEqual(s.ids, range(1, N), `${s.label} received ids exactly 1..${N}: ${idDiff(s.ids, range(1, N))}`);
      const wrong = [...s.data].filter(([id, json]) => logData.get(id) !== json).map(([id, json]) => `${id}: got ${json}, log ${logData.get(id)}`);
      assert.deepEqual(wrong, [], `${s.label}: the data of every id is the same as in the log`);
      assert.deepEqual(s.conflicts, [], `${s.label}: no id delivered twice with different data`);
      assert.deepEqual(s.errors, [], `${s.label}: protocol errors`);
      if (s.kind !== 'poll') assert.equal(s.connects.length, 1, `${s.label} never dropped${s.describe()}`);
    }
    const pollSub = subs[4];
    t.diagnostic(`long-poller needed ${pollSub.polls} polls for ${N} messages`);
    for (const pub of wsPubs) {
      assert.deepEqual(pub.errors, [], `${pub.label}: no error frame`);
      assert.equal(pub.connects.length, 1, `${pub.label} never dropped`);
    }
    for (const s of subs) await s.stop();
    for (const pub of wsPubs) await pub.stop();
  });
});

// ================================================================ 3. hibernation

// Bare workerd hibernates an idle room with only hibernatable WebSockets
// (checked: `loads` in GET /rooms/R went from 1 to 2 after 15 s idle with one
// socket open), so this runs on workerd like the rest of the file.
describe('hibernation under load (workerd)', () => {
  const hub = suiteHub({ runtime: 'workerd', vars: { RATE_PER_SEC: '0' } }, { cleanup: killAll });

  test('40 sockets survive hibernation: the wake delivers to all 40, presence and counts intact, WS publish after the wake', async (t) => {
    const { url } = hub;
    const room = roomName('hib40');
    const SOCKETS = 40;
    const socks = await openSockets(url, room, SOCKETS);
    const names = socks.map((s) => s.welcome.you.presence_name).sort();
    assert.equal(new Set(names).size, SOCKETS, 'every socket has its own presence name');

    for (let i = 1; i <= 5; i += 1) assert.equal((await mustPost(url, room, { data: { pre: i } })).id, i);
    for (const s of socks) await s.nextMessage(5);

    const initial = await roomState(url, room);
    assert.equal(initial.connections.ws, SOCKETS, show(initial));
    assert.deepEqual([...initial.presence].sort(), names, 'presence lists the 40 names');
    const firstLoads = initial.loads;

    let loads = firstLoads;
    let lastId = 5;
    let rounds = 0;
    while (loads <= firstLoads && rounds < 4) {
      rounds += 1;
      // Unavoidable wait: nothing tells a client that the runtime hibernated
      // the room, and any request or frame to the room would keep it awake.
      // workerd evicts an idle room after roughly 10-15 s, so wait 15 s in
      // silence, then look at `loads` (which only grows when the room loads).
      await sleep(15_000);
      const res = await mustPost(url, room, { data: { wake: rounds } });
      assert.equal(res.id, lastId + 1, `ids continue across the wake (round ${rounds})`);
      lastId = res.id;
      const frames = await Promise.all(socks.map((s) => s.nextMessage(lastId)));
      for (const f of frames) assert.deepEqual(f.data, { wake: rounds }, `message ${lastId} data`);
      loads = (await roomState(url, room)).loads;
    }
    t.diagnostic(`loads ${firstLoads} → ${loads} after ${rounds} idle round(s) of 15 s`);
    assert.ok(loads > firstLoads, `the room hibernated and reloaded (loads ${loads} after ${rounds} idle rounds of 15 s)`);

    const woke = await roomState(url, room);
    assert.equal(woke.connections.ws, SOCKETS, `connections.ws after the wake: ${show(woke)}`);
    assert.deepEqual([...woke.presence].sort(), names, 'presence after the wake: the same 40 names');
    assert.ok(woke.loads > 1);

    // A WebSocket publish after the wake: acked, delivered to all 40.
    const cid = `${RUN}-hib-after`;
    socks[17].send({ type: 'publish', data: { after: 'wake' }, cid });
    const ack = await socks[17].next((f) => (f.type === 'ack' && f.cid === cid) || f.type === 'error', `ack for ${cid}`);
    assert.deepEqual(ack, { type: 'ack', cid, id: lastId + 1 });
    lastId = ack.id;
    const frames = await Promise.all(socks.map((s) => s.nextMessage(lastId)));
    for (const f of frames) assert.deepEqual(f.data, { after: 'wake' });

    for (const s of socks) {
      assert.deepEqual(s.messageIds(), range(1, lastId), `every socket got 1..${lastId} once, in order${s.seen()}`);
      assert.equal(s.closeInfo, null, 'no socket was closed');
      assert.deepEqual(s.ofType('reset'), []);
    }
    const log = await fetchLog(url, room);
    assert.deepEqual(log.messages.map((m) => m.id), range(1, lastId));
    for (const s of socks) s.ws.terminate();
  });
});

// ================================================================ 4. dead clients

describe('dead and departing WebSocket clients', () => {
  const hub = suiteHub({ runtime: 'workerd', vars: { RATE_PER_SEC: '0' } }, { cleanup: killAll });

  test('30 sockets dropped without a close frame leave connections.ws (0 within 20 s); the room still serves', async (t) => {
    const { url } = hub;
    const room = roomName('dead');
    const socks = await openSockets(url, room, 30);
    await waitFor(async () => (await roomState(url, room)).connections.ws === 30, WAIT_MS, 'connections.ws === 30');

    const dropped = Date.now();
    for (const s of socks) s.ws.terminate(); // TCP drop, no close frame
    await Promise.all(socks.map((s) => withTimeout(s.closed, WAIT_MS, 'local close after terminate')));
    let seen;
    const { value: st, elapsed } = await waitFor(async () => {
      seen = await roomState(url, room);
      return seen.connections.ws === 0 ? seen : null;
    }, 20_000, 'connections.ws === 0 after 30 terminated sockets', () => ` (last seen ${show(seen)})`);
    t.diagnostic(`30 dropped sockets left the counts ${Date.now() - dropped} ms after the drop (${elapsed} ms of polling)`);
    assert.deepEqual(st.presence, [], 'presence is empty');

    // Still serves: HTTP and WebSocket publishing, replay.
    const pub = await mustPost(url, room, { data: 'after drops' });
    assert.equal(pub.id, 1);
    const { client: s } = await WsClient.welcomed(url, room, '?since=0');
    assert.deepEqual(s.welcome.presence, [s.welcome.you.presence_name], 'only the new socket is present');
    assert.deepEqual((await s.nextMessage(1)).data, 'after drops');
    s.send({ type: 'publish', data: 'ws after drops', cid: `${RUN}-dead-1` });
    const ack = await s.next((f) => f.type === 'ack' || f.type === 'error', 'ack');
    assert.equal(ack.type, 'ack', show(ack));
    assert.equal(ack.id, 2);
    await s.nextMessage(2);
    assert.equal((await roomState(url, room)).connections.ws, 1);
    await s.close();
    await waitFor(async () => (await roomState(url, room)).connections.ws === 0, WAIT_MS, 'connections.ws === 0 after the last close');
  });

  test('30 sockets closed cleanly: an observer sees a leave for each, and the count returns to 0', async (t) => {
    const { url } = hub;
    const room = roomName('leave');
    const { client: observer } = await WsClient.welcomed(url, room);
    const socks = await openSockets(url, room, 30);
    const names = socks.map((s) => s.welcome.you.presence_name).sort();
    await waitFor(() => observer.ofType('join').length >= 30, WAIT_MS, '30 join frames on the observer', () => observer.seen());
    assert.deepEqual(observer.ofType('join').map((f) => f.user).sort(), names, 'a join per socket');
    assert.equal((await roomState(url, room)).connections.ws, 31);

    const closing = Date.now();
    const infos = await Promise.all(socks.map((s) => s.close()));
    for (const info of infos) assert.equal(info.code, 1000, 'the close is answered with 1000');
    await waitFor(() => observer.ofType('leave').length >= 30, WAIT_MS, '30 leave frames on the observer', () => observer.seen());
    t.diagnostic(`30 leave frames seen ${Date.now() - closing} ms after the closes began`);
    assert.deepEqual(observer.ofType('leave').map((f) => f.user).sort(), names, 'a leave per socket, for exactly those names');
    const { value: st } = await waitFor(async () => {
      const s = await roomState(url, room);
      return s.connections.ws === 1 ? s : null;
    }, WAIT_MS, 'connections.ws === 1 (the observer)');
    assert.deepEqual(st.presence, [observer.welcome.you.presence_name]);
    await observer.close();
    await waitFor(async () => (await roomState(url, room)).connections.ws === 0, WAIT_MS, 'connections.ws === 0');
  });
});

// ================================================================ 5. storage bounds

describe('storage bounds with HISTORY_LIMIT=10', () => {
  let hub;
  let state;

  before(async () => {
    state = stateDir();
    hub = await startHub({ runtime: 'workerd', stateDir: state.dir, vars: { HISTORY_LIMIT: '10', RATE_PER_SEC: '0' } });
  });

  afterEach(killAll);

  after(async () => {
    await killAll();
    await hub?.stop();
    state?.cleanup();
  });

  test('1 KB messages: storage does not grow with them; first_id 391 after 400; resume from 5 gets reset then 391..400 on WS, SSE and poll; a poll without a cursor never sees trimmed rows', async (t) => {
    const { url } = hub;
    const room = roomName('bounded');
    const pad = 'x'.repeat(1000);
    const sizes = {};
    const publishThrough = async (from, to) => {
      for (let n = from; n <= to; n += 1) {
        const r = await mustPost(url, room, { data: { n, pad } });
        assert.equal(r.id, n);
        if (n === 10 || n === 400 || n === 600) sizes[n] = dirSize(state.dir);
      }
    };
    await publishThrough(1, 400);

    const st = await roomState(url, room);
    assert.equal(st.first_id, 391, show(st));
    assert.equal(st.last_id, 400, show(st));
    const expected = range(391, 400);
    const reset = { reason: 'history_exceeded', first_id: 391 };

    // WebSocket resume from a pruned id.
    const { client: s } = await WsClient.welcomed(url, room, '?since=5');
    await s.nextMessage(400);
    const wsStream = s.frames.filter((f) => ['welcome', 'reset', 'message'].includes(f.type));
    assert.equal(wsStream[0].type, 'welcome');
    assert.deepEqual(wsStream[1], { type: 'reset', ...reset }, `WS reset${s.seen()}`);
    assert.deepEqual(wsStream.slice(2).map((f) => f.id), expected, `WS replay${s.seen()}`);
    assert.deepEqual(wsStream.slice(2).map((f) => f.data.n), expected);
    s.ws.terminate();

    // SSE resume with Last-Event-ID: 5.
    const sse = new SseSubscriber(url, room, 'sse Last-Event-ID 5', 5);
    await sse.reached(400);
    await sse.stop();
    assert.equal(sse.connects.length, 1, `one stream${sse.describe()}`);
    assert.equal(sse.connects[0].since, 5, 'the stream resumed from Last-Event-ID: 5');
    assert.deepEqual(sse.resets.map(({ reason, first_id }) => ({ reason, first_id })), [reset], `SSE reset${sse.describe()}`);
    assert.deepEqual(sse.ids, expected, `SSE replay: ${idDiff(sse.ids, expected)}`);
    assert.deepEqual([...sse.data.values()].map((d) => JSON.parse(d).n), expected);
    assert.deepEqual(sse.errors, []);

    // Polling from 5.
    const polled = await httpJson(url, `/rooms/${room}/messages?since=5`);
    assert.equal(polled.status, 200);
    assert.deepEqual(polled.body.reset, reset, `poll reset: ${show(polled.body.reset)}`);
    assert.deepEqual(polled.body.messages.map((m) => m.id), expected);
    assert.deepEqual(polled.body.messages.map((m) => m.data.n), expected);
    assert.equal(polled.body.last_id, 400);

    // Storage, once SQLite's write-ahead log has peaked: it grows to the
    // automatic checkpoint's size (1000 pages), then is reused; 400
    // messages of 1 KB take it there. Storage trims the history in
    // batches (docs/PROTOCOL.md, history), so the rows it holds vary by
    // less than a batch; the size must not follow the message count.
    await publishThrough(401, 605);
    const KiB = (b) => `${(b / 1024).toFixed(1)} KiB`;
    t.diagnostic(`storage directory: ${KiB(sizes[10].total)} after 10, ${KiB(sizes[400].total)} after 400, ${KiB(sizes[600].total)} after 600 messages`);
    t.diagnostic(`database files without WAL/SHM: ${KiB(sizes[10].db)} after 10, ${KiB(sizes[400].db)} after 400, ${KiB(sizes[600].db)} after 600`);
    t.diagnostic(`files after 600: ${sizes[600].files.join(', ')}`);
    const bound = sizes[400].total * 1.5 + 64 * 1024;
    assert.ok(sizes[600].total < bound,
      `storage after 600 (${sizes[600].total} B) < 1.5 × storage after 400 (${sizes[400].total} B) + 64 KiB = ${bound} B; ` +
      `files@400: ${sizes[400].files.join(', ')}; files@600: ${sizes[600].files.join(', ')}`);
    assert.ok(sizes[600].db < sizes[400].db * 1.5 + 64 * 1024,
      `database files after 600 (${sizes[600].db} B) < 1.5 × after 400 (${sizes[400].db} B) + 64 KiB`);

    // Storage holds 591..605 now (the next trim is at 610): a poll without
    // a cursor gets the newest 10, never the rows still awaiting the trim.
    const latest = await httpJson(url, `/rooms/${room}/messages?limit=50`);
    assert.equal(latest.status, 200);
    assert.deepEqual(latest.body.messages.map((m) => m.id), range(596, 605));
    assert.equal((await roomState(url, room)).first_id, 596);
    const resumed = await httpJson(url, `/rooms/${room}/messages?since=5`);
    assert.deepEqual(resumed.body.reset, { reason: 'history_exceeded', first_id: 596 });
    assert.deepEqual(resumed.body.messages.map((m) => m.id), range(596, 605));

    // For the report: the size once workerd stopped cleanly.
    await hub.stop();
    hub = undefined;
    t.diagnostic(`after a clean stop: ${KiB(dirSize(state.dir).total)}`);
  });
});
