// The Server-Sent Events transport, checked against docs/PROTOCOL.md,
// "Server-Sent Events":
// GET /rooms/{room}/events — headers and the `retry:` preamble, live delivery,
// heartbeats, resume by `?since=` and `Last-Event-ID` (and which wins),
// `reset` signals, ids shared with HTTP and WebSocket publishes, framing that
// nothing a publisher sends can break, dead and slow streams, room counts.
//
// Two kinds of clients: SseClient (tests/support.mjs), a `node:http` stream
// read into items by the shared reader that also keeps the exact bytes, for
// their layout and timing, and the `eventsource` package (a real client that
// reconnects with Last-Event-ID by itself).
//
// Run, from the repository root after `npm run build`:
//   node --test --test-timeout=90000 tests/sse.test.mjs
// (HUB_BUILD_DIR=<dir> tests a copy of build/ instead.)
import { describe, test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { EventSource } from 'eventsource';
import { startHub } from '../scripts/launch/hub.mjs';
import { stateDir } from '../scripts/launch/state.mjs';
import { freePort } from '../scripts/launch/ports.mjs';
import { roomName, publish, WAIT_MS, withTimeout, waitFor, show, range, roomState, mustPublish, Inbox, WsClient, closeWsClients, SseClient, closeSseClients, suiteHub } from './support.mjs';

// ---------------------------------------------------------------- helpers

const ENVELOPE_KEYS = ['data', 'event', 'from', 'id', 'ts'];

/** Every EventSource a test opened, so `closeAll` can end the ones left open. */
const openClients = new Set();

/**
 * Asserts that the bytes of stream `s` hold `frame` (its lines, e.g.
 * 'id: 1\nevent: message\ndata: …') as one whole frame: right after the
 * blank line that ends the frame before it, and ended by a blank line of
 * its own. Every stream starts with the `retry:` frame, so every later
 * frame has a frame before it; and no frame can hold a blank line, so this
 * pins the frame's lines exactly.
 */
function assertWholeFrame(s, frame, what = 'frame') {
  assert.ok(s.raw.includes(`\n\n${frame}\n\n`), `${what}: ${show(frame)} as one whole frame on the wire; the stream: ${show(s.raw.slice(-600))}`);
}

/** An `eventsource` package client; `inbox` holds the dispatched events. */
class EsClient {
  constructor(url, types = ['message', 'reset']) {
    this.label = `EventSource ${url}`;
    this.inbox = new Inbox(this.label);
    this.opens = 0;
    this.errors = [];
    this.es = new EventSource(url);
    openClients.add(this);
    for (const type of types) {
      this.es.addEventListener(type, (ev) => {
        let json;
        try {
          json = JSON.parse(ev.data);
        } catch {
          json = undefined;
        }
        this.inbox.push({ type, data: ev.data, json, lastEventId: ev.lastEventId, at: Date.now() });
      });
    }
    this.openInbox = new Inbox(`${this.label} opens`);
    this.es.addEventListener('open', () => {
      this.opens += 1;
      this.openInbox.push({ open: this.opens, at: Date.now() });
    });
    this.es.addEventListener('error', (ev) => {
      this.errors.push({ message: ev.message, code: ev.code, at: Date.now(), readyState: this.es.readyState });
    });
  }

  next(pred, what, ms) {
    return this.inbox.next(pred, what, ms);
  }

  nextId(id, ms) {
    return this.next((e) => e.type === 'message' && e.lastEventId === String(id), `message id ${id}`, ms);
  }

  messageIds() {
    return this.inbox.items.filter((e) => e.type === 'message').map((e) => e.json?.id);
  }

  close() {
    this.es.close();
    openClients.delete(this);
  }
}

/** Ends every client a test left open (EventSources here, SSE streams and WebSockets in support.mjs). */
async function closeAll() {
  for (const c of [...openClients]) c.close();
  closeSseClients();
  await closeWsClients();
}

/** Waits until GET /rooms/{room} reports `connections.sse === n`. */
async function waitSse(url, room, n, ms = WAIT_MS) {
  let seen;
  return waitFor(
    async () => {
      seen = (await roomState(url, room)).connections.sse;
      return seen === n;
    },
    ms,
    `connections.sse === ${n} in ${room}`,
    () => ` (last seen ${seen})`,
  );
}

/** Asserts a message event of stream `s` is exactly the frame `id / event / data` and returns its envelope. */
function assertMessageFrame(s, frame, { id, event = 'message', ts, data }) {
  assertWholeFrame(s, `id: ${id}\nevent: ${event}\ndata: ${frame.data}`, `frame layout of id ${id}`);
  assert.ok(frame.json && typeof frame.json === 'object', `data is one line of JSON: ${show(frame.data)}`);
  assert.deepEqual(Object.keys(frame.json).sort(), ENVELOPE_KEYS);
  assert.equal(frame.json.id, id);
  assert.equal(frame.json.event, event);
  assert.equal(frame.json.from, null);
  if (ts !== undefined) assert.equal(frame.json.ts, ts);
  assert.deepEqual(frame.json.data, data);
  return frame.json;
}

async function fetchText(url, path, headers = {}) {
  const res = await fetch(`${url}${path}`, { headers });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: res.status, headers: res.headers, text, body };
}

// ---------------------------------------------------------------- main hub

describe('SSE transport (HEARTBEAT_SECS=1, rate limits off)', () => {
  const hub = suiteHub({ runtime: 'miniflare', vars: { RATE_PER_SEC: '0', HEARTBEAT_SECS: '1' } }, { cleanup: closeAll });
  let url;
  before(() => {
    url = hub.url;
  });

  describe('stream basics', () => {
    test('200, text/event-stream; charset=utf-8, no-cache, and the first bytes are "retry: 1000\\n\\n"', async () => {
      const room = roomName('sse-head');
      const s = await SseClient.open(url, `/rooms/${room}/events`);
      assert.equal(s.status, 200);
      assert.equal(s.headers['content-type'], 'text/event-stream; charset=utf-8');
      assert.equal(s.headers['cache-control'], 'no-cache');
      const first = await s.next(() => true, 'the first frame');
      assert.deepEqual(first, { kind: 'retry', retry: 1000 });
      assert.ok(s.raw.startsWith('retry: 1000\n\n'), `stream starts with the retry line: ${show(s.raw.slice(0, 40))}`);
      assert.equal(s.items[0], first);
    });

    test('a message published after the stream opened arrives live (< 2 s) as id/event/data', async (t) => {
      const room = roomName('sse-live');
      const s = await SseClient.open(url, `/rooms/${room}/events`);
      await s.next((f) => f.retry !== undefined, 'retry preamble');
      const started = Date.now();
      const sent = await mustPublish(url, room, { event: 'chat.msg', data: { a: 1, b: 'héllo 🌍', c: [true, null] } });
      const frame = await s.nextId(sent.id, 2000);
      const latency = Date.now() - started;
      t.diagnostic(`publish -> SSE frame: ${latency} ms`);
      assert.equal(sent.id, 1);
      assertMessageFrame(s, frame, { id: 1, event: 'chat.msg', ts: sent.ts, data: { a: 1, b: 'héllo 🌍', c: [true, null] } });

      // A default event name, and a second message, both live and in order.
      const second = await mustPublish(url, room, { data: 'two' });
      const f2 = await s.nextId(second.id, 2000);
      assertMessageFrame(s, f2, { id: 2, event: 'message', ts: second.ts, data: 'two' });
      assert.deepEqual(s.ids(), [1, 2]);
      assert.deepEqual(s.events().map((f) => f.id), ['1', '2'], 'nothing but the two messages');
    });

    test('every open stream of the room receives every message, in order', async () => {
      const room = roomName('sse-fanout');
      const a = await SseClient.open(url, `/rooms/${room}/events`);
      const b = await SseClient.open(url, `/rooms/${room}/events`);
      const sent = [];
      for (let i = 1; i <= 10; i += 1) sent.push(await mustPublish(url, room, { data: i }));
      for (const s of [a, b]) {
        await s.nextId(10);
        assert.deepEqual(s.ids(), range(1, 10));
        assert.deepEqual(s.events().map((f) => f.json.data), range(1, 10));
        assert.deepEqual(s.events().map((f) => f.json.ts), sent.map((x) => x.ts));
      }
    });

    test('a burst to 60 streams (coalesced into fewer writes) arrives complete, in order, as whole events', async () => {
      // With this many streams the room defers its wake-ups and sends what
      // queued meanwhile in one chunk (durable/sse.rs, "Coalescing").
      const room = roomName('sse-burst');
      const streams = [];
      for (let i = 0; i < 60; i += 1) streams.push(await SseClient.open(url, `/rooms/${room}/events`));
      await waitSse(url, room, 60);
      // A burst at the room: 100 publish frames sent without waiting for acks.
      const ws = await WsClient.open(url, room);
      for (let i = 1; i <= 100; i += 1) ws.send({ type: 'publish', data: i, cid: `c${i}` });
      await ws.nextAck('c100');
      for (const s of streams) {
        await s.nextId(100);
        assert.deepEqual(s.ids(), range(1, 100));
        assert.deepEqual(s.events().map((f) => f.json.data), range(1, 100));
        assertWholeFrame(s, `id: 100\nevent: message\ndata: ${JSON.stringify(s.events().at(-1).json)}`, 'the last event');
      }
    });

    test('a heartbeat comment ":\\n\\n" comes every HEARTBEAT_SECS (at least 2 within 4 s)', async (t) => {
      const room = roomName('sse-hb');
      const opened = Date.now();
      const s = await SseClient.open(url, `/rooms/${room}/events`);
      const deadline = opened + 4000;
      const isHeartbeat = (f) => f.kind === 'comment';
      const h1 = await s.next(isHeartbeat, 'first heartbeat', Math.max(1, deadline - Date.now()));
      const t1 = Date.now() - opened;
      const h2 = await s.next(isHeartbeat, 'second heartbeat', Math.max(1, deadline - Date.now()));
      const t2 = Date.now() - opened;
      t.diagnostic(`heartbeats at ${t1} ms and ${t2} ms after opening`);
      assert.deepEqual([h1, h2], [{ kind: 'comment', comment: '' }, { kind: 'comment', comment: '' }]);
      // Nothing else is sent to this room: the bytes are the retry frame, then two bare ':' frames.
      assert.ok(s.raw.startsWith('retry: 1000\n\n:\n\n:\n\n'), `retry, then heartbeats: ${show(s.raw.slice(0, 40))}`);
    });

    test('GET /rooms/{room}: connections.sse follows opens and closes', async () => {
      const room = roomName('sse-count');
      assert.equal((await roomState(url, room)).connections.sse, 0);
      const a = await SseClient.open(url, `/rooms/${room}/events`);
      await waitSse(url, room, 1);
      const b = await SseClient.open(url, `/rooms/${room}/events`);
      const c = await SseClient.open(url, `/rooms/${room}/events?since=0`);
      await waitSse(url, room, 3);
      const state = await roomState(url, room);
      assert.equal(state.connections.ws, 0);
      assert.equal(state.connections.poll, 0);
      a.close();
      await waitSse(url, room, 2, 10_000);
      b.close();
      c.close();
      await waitSse(url, room, 0, 10_000);
    });
  });

  describe('resume', () => {
    test('?since=ID replays exactly the messages after ID, then continues live: no gap, no duplicate', async () => {
      const room = roomName('sse-since');
      for (let i = 1; i <= 5; i += 1) await mustPublish(url, room, { data: `m${i}` });
      const s = await SseClient.open(url, `/rooms/${room}/events?since=2`);
      await s.nextId(5);
      assert.deepEqual(s.ids(), [3, 4, 5]);
      const live = await mustPublish(url, room, { data: 'm6' });
      assert.equal(live.id, 6);
      await s.nextId(6, 2000);
      const sentinel = await mustPublish(url, room, { data: 'm7' });
      await s.nextId(sentinel.id);
      assert.deepEqual(s.ids(), [3, 4, 5, 6, 7]);
      assert.deepEqual(s.events().map((f) => f.json.data), ['m3', 'm4', 'm5', 'm6', 'm7']);
      assert.deepEqual(s.items[0], { kind: 'retry', retry: 1000 }, 'the retry line still comes first');
      assert.ok(s.raw.startsWith('retry: 1000\n\n'), `the stream starts with the retry frame: ${show(s.raw.slice(0, 40))}`);
      assert.ok(!s.events().some((f) => f.event === 'reset'), 'no reset for a kept cursor');
    });

    test('?since=0 replays everything from id 1', async () => {
      const room = roomName('sse-since0');
      for (let i = 1; i <= 3; i += 1) await mustPublish(url, room, { data: i });
      const s = await SseClient.open(url, `/rooms/${room}/events?since=0`);
      await s.nextId(3);
      await mustPublish(url, room, { data: 4 });
      await s.nextId(4);
      assert.deepEqual(s.ids(), [1, 2, 3, 4]);
      assert.deepEqual(s.events().map((f) => f.json.data), [1, 2, 3, 4]);
    });

    test('?since=last_id replays nothing and continues live', async () => {
      const room = roomName('sse-since-last');
      for (let i = 1; i <= 3; i += 1) await mustPublish(url, room, { data: i });
      const s = await SseClient.open(url, `/rooms/${room}/events?since=3`);
      await mustPublish(url, room, { data: 4 });
      await s.nextId(4);
      assert.deepEqual(s.ids(), [4]);
    });

    test('Last-Event-ID header replays exactly the messages after it, then live', async () => {
      const room = roomName('sse-leid');
      for (let i = 1; i <= 5; i += 1) await mustPublish(url, room, { data: i });
      const s = await SseClient.open(url, `/rooms/${room}/events`, { 'Last-Event-ID': '3' });
      await s.nextId(5);
      await mustPublish(url, room, { data: 6 });
      await s.nextId(6, 2000);
      assert.deepEqual(s.ids(), [4, 5, 6]);
    });

    test('without a cursor only live messages are sent (no replay)', async () => {
      const room = roomName('sse-nocursor');
      for (let i = 1; i <= 3; i += 1) await mustPublish(url, room, { data: i });
      const s = await SseClient.open(url, `/rooms/${room}/events`);
      await mustPublish(url, room, { data: 4 });
      await s.nextId(4);
      assert.deepEqual(s.ids(), [4]);
    });

    test('an empty Last-Event-ID means no cursor', async () => {
      const room = roomName('sse-leid-empty');
      for (let i = 1; i <= 3; i += 1) await mustPublish(url, room, { data: i });
      const s = await SseClient.open(url, `/rooms/${room}/events`, { 'Last-Event-ID': '' });
      assert.equal(s.status, 200, `status ${s.status}: ${s.body}`);
      await mustPublish(url, room, { data: 4 });
      await s.nextId(4);
      assert.deepEqual(s.ids(), [4]);
    });

    test('?since= and Last-Event-ID together: the larger wins', async () => {
      const room = roomName('sse-both');
      for (let i = 1; i <= 6; i += 1) await mustPublish(url, room, { data: i });
      const a = await SseClient.open(url, `/rooms/${room}/events?since=2`, { 'Last-Event-ID': '4' });
      const b = await SseClient.open(url, `/rooms/${room}/events?since=4`, { 'Last-Event-ID': '2' });
      await mustPublish(url, room, { data: 7 });
      for (const s of [a, b]) {
        await s.nextId(7);
        assert.deepEqual(s.ids(), [5, 6, 7], s.label);
      }
    });

    test('bad cursors answer 400 invalid_param (JSON) and open no stream', async () => {
      const room = roomName('sse-bad');
      await mustPublish(url, room, { data: 1 });
      const cases = [
        ['since=abc', '?since=abc', {}],
        ['since=-1', '?since=-1', {}],
        ['since=1.5', '?since=1.5', {}],
        ['since= (empty)', '?since=', {}],
        ['Last-Event-ID: x', '', { 'Last-Event-ID': 'x' }],
        ['Last-Event-ID: -3', '', { 'Last-Event-ID': '-3' }],
        ['good since, bad Last-Event-ID', '?since=0', { 'Last-Event-ID': 'x' }],
      ];
      for (const [label, query, headers] of cases) {
        const res = await fetchText(url, `/rooms/${room}/events${query}`, headers);
        assert.equal(res.status, 400, `${label}: ${res.status} ${res.text.slice(0, 200)}`);
        assert.match(res.headers.get('content-type') ?? '', /application\/json/, `${label}: content-type`);
        assert.ok(res.body && typeof res.body === 'object', `${label}: JSON body ${res.text.slice(0, 200)}`);
        assert.equal(res.body.error, 'invalid_param', `${label}: ${res.text}`);
        assert.equal(typeof res.body.message, 'string', `${label}: message`);
      }
      assert.equal((await roomState(url, room)).connections.sse, 0);
    });
  });

  describe('with the eventsource package', () => {
    test('?since=0 delivers ids 1..5 with lastEventId, then live 6', async () => {
      const room = roomName('es-since0');
      const sent = [];
      for (let i = 1; i <= 5; i += 1) sent.push(await mustPublish(url, room, { data: { n: i } }));
      const es = new EsClient(`${url}/rooms/${room}/events?since=0`);
      await es.nextId(5);
      const live = await mustPublish(url, room, { data: { n: 6 } });
      await es.nextId(6, 2000);
      assert.equal(live.id, 6);
      const events = es.inbox.items;
      assert.deepEqual(events.map((e) => e.type), Array(6).fill('message'));
      assert.deepEqual(events.map((e) => e.lastEventId), ['1', '2', '3', '4', '5', '6']);
      assert.deepEqual(events.map((e) => e.json), [...sent, live].map((s, i) => ({
        id: i + 1, event: 'message', from: null, ts: s.ts, data: { n: i + 1 },
      })));
      assert.equal(es.opens, 1);
      assert.equal(es.errors.length, 0, JSON.stringify(es.errors));
    });

    test('named events are dispatched under their event name', async () => {
      const room = roomName('es-named');
      const es = new EsClient(`${url}/rooms/${room}/events`, ['message', 'reset', 'chat.typing']);
      await es.openInbox.next(() => true, 'open');
      const a = await mustPublish(url, room, { event: 'chat.typing', data: 'x' });
      const b = await mustPublish(url, room, { data: 'y' });
      await es.nextId(b.id);
      assert.deepEqual(es.inbox.items.map((e) => [e.type, e.lastEventId, e.json.data]), [
        ['chat.typing', String(a.id), 'x'],
        ['message', String(b.id), 'y'],
      ]);
    });
  });

  describe('cross-transport ids', () => {
    test('HTTP and WebSocket publishes arrive on SSE with the ids of the POST answers and acks, in order', async () => {
      const room = roomName('sse-cross');
      const s = await SseClient.open(url, `/rooms/${room}/events`);
      const { client: ws } = await WsClient.welcomed(url, room);
      const expected = []; // [id, data] in publish order
      for (let i = 0; i < 6; i += 1) {
        if (i % 2 === 0) {
          const r = await mustPublish(url, room, { data: { via: 'http', i } });
          expected.push([r.id, { via: 'http', i }]);
        } else {
          const ack = await ws.publish({ via: 'ws', i }, { cid: `sse-cross-${process.pid}-${i}` });
          expected.push([ack.id, { via: 'ws', i }]);
        }
      }
      assert.deepEqual(expected.map(([id]) => id), range(1, 6));
      // Then both at once: the ids interleave, the stream is still strictly ordered.
      const concurrent = await Promise.all([
        ...range(0, 9).map(async (i) => [(await mustPublish(url, room, { data: { via: 'http', c: i } })).id, { via: 'http', c: i }]),
        ...range(0, 9).map(async (i) => [(await ws.publish({ via: 'ws', c: i }, { cid: `sse-cross-c-${process.pid}-${i}` })).id, { via: 'ws', c: i }]),
      ]);
      const all = [...expected, ...concurrent].sort((x, y) => x[0] - y[0]);
      assert.deepEqual(all.map(([id]) => id), range(1, 26), 'ids are 1..26 with no gap');
      await s.nextId(26);
      assert.deepEqual(s.ids(), range(1, 26));
      for (const [i, frame] of s.events().entries()) {
        assert.equal(frame.json.id, all[i][0]);
        assert.deepEqual(frame.json.data, all[i][1], `data of id ${all[i][0]}`);
      }
    });
  });

  describe('injection', () => {
    test('an event name with a line break is refused (400 invalid_event); reserved names too; nothing reaches the stream', async () => {
      const room = roomName('sse-inj-event');
      const s = await SseClient.open(url, `/rooms/${room}/events`);
      for (const event of ['x\ndata: evil', 'x\rdata: evil', 'x\r\nid: 999', 'message\n\nevent: reset']) {
        const res = await publish(url, room, { event, data: 1 });
        assert.equal(res.status, 400, `event ${JSON.stringify(event)}: ${res.status} ${JSON.stringify(res.body)}`);
        assert.equal(res.body?.error, 'invalid_event', `event ${JSON.stringify(event)}: ${JSON.stringify(res.body)}`);
      }
      const reserved = await publish(url, room, { event: 'reset', data: { reason: 'history_exceeded', first_id: 1 } });
      assert.equal(reserved.status, 400, JSON.stringify(reserved.body));
      assert.equal(reserved.body?.error, 'reserved_event');
      const ok = await mustPublish(url, room, { data: 'after' });
      assert.equal(ok.id, 1, 'nothing refused was stored');
      await s.nextId(1);
      assert.deepEqual(s.events().map((f) => f.id), ['1'], `one event, the accepted one: ${show(s.events())}`);
      assertWholeFrame(s, `id: 1\nevent: message\ndata: ${s.events()[0].data}`, 'the accepted message');
      assert.ok(!s.raw.includes('evil'));
    });

    test('data with blank lines, fake fields, CR and CRLF arrives as exactly one event each, unchanged', async () => {
      const room = roomName('sse-inj-data');
      const s = await SseClient.open(url, `/rooms/${room}/events`);
      const es = new EsClient(`${url}/rooms/${room}/events`);
      await es.openInbox.next(() => true, 'EventSource open');
      const payloads = [
        '\n\nid: 999\ndata: evil\n\n',
        'line1\r\nline2\r\n\r\nevent: reset\r\ndata: {}\r\n\r\n',
        'cr\ronly\r\rretry: 1\r',
        ': comment\n:\nid:\n',
        '\u2028\u2029\u0000 end',
        { nested: '\n\nid: 998\n\n', arr: ['\r\n', 'data: x'] },
      ];
      const ids = [];
      for (const data of payloads) ids.push((await mustPublish(url, room, { data })).id);
      const sentinel = await mustPublish(url, room, { data: 'sentinel' });
      await s.nextId(sentinel.id);
      await es.nextId(sentinel.id);

      const expectedIds = [...ids, sentinel.id];
      assert.deepEqual(s.ids(), expectedIds);
      const events = s.events();
      assert.equal(events.length, expectedIds.length, `exactly one event per publish: ${events.map((f) => show(f.data)).join(', ')}`);
      // assertMessageFrame checks the frame on the wire: exactly three lines, id, event and data.
      for (const [i, data] of payloads.entries()) assertMessageFrame(s, events[i], { id: ids[i], data });
      assert.ok(!s.raw.includes('\r'), 'no CR byte on the wire');
      assert.ok(!s.ids().includes(999) && !s.ids().includes(998));

      // The real client agrees: one message per publish, data intact, no reset.
      assert.deepEqual(es.inbox.items.map((e) => e.type), Array(expectedIds.length).fill('message'));
      assert.deepEqual(es.inbox.items.map((e) => e.lastEventId), expectedIds.map(String));
      assert.deepEqual(es.inbox.items.map((e) => e.json.data), [...payloads, 'sentinel']);
    });
  });

  describe('dead and slow streams', () => {
    test('20 streams whose clients went away leave connections.sse within 10 heartbeats', async (t) => {
      const room = roomName('sse-dead');
      const streams = [];
      for (let i = 0; i < 20; i += 1) streams.push(await SseClient.open(url, `/rooms/${room}/events`));
      for (const s of streams) assert.equal(s.status, 200);
      await waitSse(url, room, 20);
      // Every stream is live before the clients vanish.
      const probe = await mustPublish(url, room, { data: 'probe' });
      await Promise.all(streams.map((s) => s.nextId(probe.id)));
      const destroyedAt = Date.now();
      for (const s of streams) s.close();
      const { elapsed } = await waitSse(url, room, 0, 10_000);
      const total = Date.now() - destroyedAt;
      t.diagnostic(`connections.sse 20 -> 0 in ${elapsed} ms after destroying the client sockets (${total} ms incl. last check)`);
      // The room keeps working after forgetting them.
      const s = await SseClient.open(url, `/rooms/${room}/events?since=${probe.id}`);
      const next = await mustPublish(url, room, { data: 'after' });
      await s.nextId(next.id);
      assert.deepEqual(s.ids(), [next.id]);
    });

    test('a stream that stops reading is dropped, while a reading stream gets every message', async (t) => {
      const room = roomName('sse-slow');
      const reader = await SseClient.open(url, `/rooms/${room}/events`);
      const slow = await SseClient.open(url, `/rooms/${room}/events`);
      slow.res.pause(); // never read again; the TCP connection stays open
      await waitSse(url, room, 2);

      const big = 'x'.repeat(60_000);
      const MAX_BYTES = 8 * 1024 * 1024;
      const sentIds = [];
      let publishedBytes = 0;
      let droppedAfterBytes = null;
      const started = Date.now();
      const publishBatch = async (n) => {
        for (let i = 0; i < n; i += 1) {
          const r = await mustPublish(url, room, { data: { i: sentIds.length + 1, big } });
          sentIds.push(r.id);
          publishedBytes += big.length + 100;
        }
      };
      await publishBatch(40); // ~2.4 MB, beyond the 1 MiB per-stream bound plus kernel buffers
      // Publish more (up to ~8 MB) only while the slow stream is still counted.
      while (publishedBytes < MAX_BYTES) {
        const sse = (await roomState(url, room)).connections.sse;
        if (sse < 2) {
          droppedAfterBytes = publishedBytes;
          break;
        }
        await publishBatch(10);
      }
      const publishedAt = Date.now();
      const { elapsed } = await waitSse(url, room, 1, 15_000);
      t.diagnostic(
        `slow stream dropped: ${sentIds.length} messages (~${(publishedBytes / 1e6).toFixed(1)} MB) published in ${publishedAt - started} ms; ` +
          `drop seen ${droppedAfterBytes !== null ? `during publishing (after ~${(droppedAfterBytes / 1e6).toFixed(1)} MB)` : `${elapsed} ms after publishing ended`}; ` +
          `slow client had received ${slow.bytes} bytes`,
      );
      assert.equal(slow.req.destroyed, false, 'the slow client kept its connection open');

      // The reading stream got every message, in order, intact.
      await reader.nextId(sentIds.at(-1), 15_000);
      assert.deepEqual(reader.ids(), sentIds);
      assert.ok(reader.events().every((f, i) => f.json?.data?.i === i + 1 && f.json.data.big === big), 'payloads intact');

      // Once resumed, the dropped stream ends after an in-order prefix with no gap:
      // a reconnect from its last id loses nothing.
      slow.res.resume();
      await withTimeout(slow.ended, 15_000, 'the dropped slow stream to end once read');
      const got = slow.ids();
      t.diagnostic(`slow stream held ${got.length} message(s) before its end`);
      assert.deepEqual(got, sentIds.slice(0, got.length), 'the slow stream got a gapless prefix');
      assert.ok(got.length < sentIds.length, 'the slow stream did not get everything (it was dropped)');

      // And the room still serves the reader live.
      const after = await mustPublish(url, room, { data: 'after' });
      await reader.nextId(after.id, 2000);
    });
  });
});

// ---------------------------------------------------------------- resets

describe('SSE reset with HISTORY_LIMIT=5', () => {
  let hub;
  let url;
  let room;

  before(async () => {
    hub = await startHub({ runtime: 'miniflare', vars: { RATE_PER_SEC: '0', HISTORY_LIMIT: '5' } });
    url = hub.url;
    room = roomName('sse-reset');
    for (let i = 1; i <= 12; i += 1) await mustPublish(url, room, { data: i });
  });

  after(async () => {
    await closeAll();
    await hub?.stop();
  });

  afterEach(closeAll);

  test('since=1 (dropped) gets "event: reset" {history_exceeded, first_id 8} without an id line, then ids 8..12', async () => {
    const s = await SseClient.open(url, `/rooms/${room}/events?since=1`);
    await s.nextId(12);
    const frames = s.items.filter((f) => f.kind !== 'comment');
    assert.deepEqual(frames[0], { kind: 'retry', retry: 1000 });
    assert.ok(s.raw.startsWith('retry: 1000\n\n'), `the stream starts with the retry frame: ${show(s.raw.slice(0, 40))}`);
    assert.equal(frames[1].event, 'reset');
    assertWholeFrame(s, 'event: reset\ndata: {"reason":"history_exceeded","first_id":8}', 'the reset');
    assert.equal(frames[1].id, undefined, 'the reset carries no id');
    assert.deepEqual(frames[1].json, { reason: 'history_exceeded', first_id: 8 });
    assert.deepEqual(frames.slice(2).map((f) => Number(f.id)), [8, 9, 10, 11, 12]);
    assert.deepEqual(frames.slice(2).map((f) => f.json.data), [8, 9, 10, 11, 12]);
  });

  test('since=0 and Last-Event-ID: 3 (dropped) also get the history_exceeded reset', async () => {
    const a = await SseClient.open(url, `/rooms/${room}/events?since=0`);
    const b = await SseClient.open(url, `/rooms/${room}/events`, { 'Last-Event-ID': '3' });
    for (const s of [a, b]) {
      await s.nextId(12);
      const events = s.events();
      assert.equal(events[0].event, 'reset', s.label);
      assert.deepEqual(events[0].json, { reason: 'history_exceeded', first_id: 8 }, s.label);
      assert.deepEqual(s.ids(), [8, 9, 10, 11, 12], s.label);
    }
  });

  test('since=7 (oldest kept is 8) resumes with 8..12 and no reset', async () => {
    const s = await SseClient.open(url, `/rooms/${room}/events?since=7`);
    await s.nextId(12);
    assert.ok(!s.events().some((f) => f.event === 'reset'), 'no reset');
    assert.deepEqual(s.ids(), [8, 9, 10, 11, 12]);
  });

  test('since=99 (ahead of the log) gets a cursor_ahead reset, then everything kept, then live', async () => {
    const s = await SseClient.open(url, `/rooms/${room}/events?since=99`);
    await s.nextId(12);
    const events = s.events();
    assert.equal(events[0].event, 'reset');
    assertWholeFrame(s, 'event: reset\ndata: {"reason":"cursor_ahead","first_id":8}', 'the reset');
    assert.equal(events[0].id, undefined, 'the reset carries no id');
    // As for history_exceeded: the client's cursor is invalid, so it gets the kept log.
    assert.deepEqual(s.ids(), [8, 9, 10, 11, 12]);
    // A room with one message: reset, replay of 1, then live 2.
    const r = roomName('sse-ahead');
    await mustPublish(url, r, { data: 1 });
    const s2 = await SseClient.open(url, `/rooms/${r}/events?since=99`);
    const reset2 = await s2.next((f) => f.event === 'reset', 'reset');
    assert.deepEqual(reset2.json, { reason: 'cursor_ahead', first_id: 1 });
    await s2.nextId(1);
    const live = await mustPublish(url, r, { data: 2 });
    await s2.nextId(live.id, 2000);
    assert.deepEqual(s2.ids(), [1, 2]);
    assert.deepEqual(s2.events().map((f) => f.event), ['reset', 'message', 'message']);
  });

  test('the eventsource package sees the reset via addEventListener("reset"), then 8..12 and live', async () => {
    const r = roomName('es-reset');
    for (let i = 1; i <= 12; i += 1) await mustPublish(url, r, { data: i });
    const es = new EsClient(`${url}/rooms/${r}/events?since=1`);
    await es.nextId(12);
    const live = await mustPublish(url, r, { data: 13 });
    await es.nextId(live.id);
    const items = es.inbox.items;
    assert.equal(items[0].type, 'reset');
    assert.deepEqual(items[0].json, { reason: 'history_exceeded', first_id: 8 });
    assert.equal(items[0].lastEventId, '', 'the reset does not carry an id');
    assert.deepEqual(items.slice(1).map((e) => [e.type, e.json.id]), range(8, 13).map((id) => ['message', id]));
    assert.equal(items.length, 7);
  });
});

// ---------------------------------------------------------------- reconnect across a restart

describe('SSE reconnect across a hub restart (eventsource package, Last-Event-ID)', () => {
  let state;
  let hub;

  before(() => {
    state = stateDir();
  });

  after(async () => {
    await closeAll();
    await hub?.stop();
    state?.cleanup();
  });

  test('the client reconnects by itself with Last-Event-ID and gets every id exactly once, in order', async (t) => {
    const port = await freePort();
    const vars = { RATE_PER_SEC: '0', HEARTBEAT_SECS: '1' };
    hub = await startHub({ runtime: 'miniflare', vars, stateDir: state.dir, port });
    const url = hub.url;
    assert.equal(new URL(url).port, String(port), `hub listens on the chosen port: ${url}`);
    const room = roomName('es-restart');

    const es = new EsClient(`${url}/rooms/${room}/events`);
    await es.openInbox.next((o) => o.open === 1, 'first open');
    for (let i = 1; i <= 3; i += 1) await mustPublish(url, room, { data: `a${i}` });
    await es.nextId(3);

    const stoppedAt = Date.now();
    await hub.stop();
    hub = undefined;
    hub = await startHub({ runtime: 'miniflare', vars, stateDir: state.dir, port });
    assert.equal(hub.url, url, 'restarted on the same address');
    const restartedAt = Date.now();

    // Published on the new hub, possibly before the client reconnected (replay path).
    for (let i = 4; i <= 5; i += 1) {
      const r = await mustPublish(url, room, { data: `b${i}` });
      assert.equal(r.id, i, 'ids continue after the restart');
    }
    const published5At = Date.now();
    await es.nextId(5, 15_000);
    const reopened = await es.openInbox.next((o) => o.open === 2, 'second open');
    // If 4 and 5 were stored before the client reopened, only its Last-Event-ID
    // (the URL has no since) can have brought them: the replay path.
    const path = reopened.at > published5At ? 'replayed from Last-Event-ID' : 'live';
    t.diagnostic(
      `hub restart took ${restartedAt - stoppedAt} ms; client reopened ${reopened.at - stoppedAt} ms after stop; ids 4..5 ${path}; ` +
        `errors seen: ${es.errors.length} (${es.errors.map((e) => e.message).join(' | ')})`,
    );

    // And live on the new hub.
    const live = await mustPublish(url, room, { data: 'c6' });
    await es.nextId(live.id, 2000);
    const sentinel = await mustPublish(url, room, { data: 'c7' });
    await es.nextId(sentinel.id);

    assert.deepEqual(es.messageIds(), range(1, 7), 'every id exactly once, in order');
    assert.deepEqual(es.inbox.items.map((e) => e.json.data), ['a1', 'a2', 'a3', 'b4', 'b5', 'c6', 'c7']);
    assert.ok(!es.inbox.items.some((e) => e.type === 'reset'), 'no reset for a kept cursor');
    assert.ok(es.errors.length >= 1, 'the client saw the stream drop');
  });
});
