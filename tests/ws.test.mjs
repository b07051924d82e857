// The WebSocket transport, checked against docs/PROTOCOL.md, "WebSocket":
// GET /rooms/{room}/ws — welcome, publish/ack/broadcast, ids shared with
// HTTP, cid deduplication (also across a reconnect), ?since= replay and
// resets, ping/pong auto-response, presence/join/leave, bad input, size and
// rate limits, close reciprocation and hibernation.
//
// Run, from the repository root after `npm run build`:
//   node --test --test-timeout=90000 tests/ws.test.mjs
// (HUB_BUILD_DIR=<dir> tests a copy of build/ instead.)
import { describe, test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { roomName, getJson, WsClient, closeWsClients, refusedUpgrade, wsUrl, show, sleep, waitFor, roomState, mustPublish, range, suiteHub } from './support.mjs';

// ---------------------------------------------------------------- helpers

const ENVELOPE_KEYS = ['data', 'event', 'from', 'id', 'ts'];
const MESSAGE_FRAME_KEYS = [...ENVELOPE_KEYS, 'type'].sort();

async function poll(url, room, query = '') {
  const res = await getJson(url, `/rooms/${room}/messages${query}`);
  assert.equal(res.status, 200, `poll ${room}${query}: ${JSON.stringify(res.body)}`);
  return res.body;
}

/** The envelope of a message frame: the frame without its type. */
function envelopeOf(frame) {
  const { type, ...envelope } = frame;
  assert.equal(type, 'message');
  return envelope;
}

function assertMessageFrame(frame, { id, event = 'message', data }) {
  assert.deepEqual(Object.keys(frame).sort(), MESSAGE_FRAME_KEYS, `message frame keys: ${show(frame)}`);
  assert.equal(frame.type, 'message');
  assert.equal(frame.id, id);
  assert.equal(frame.event, event);
  assert.equal(frame.from, null);
  assert.ok(Number.isInteger(frame.ts) && Math.abs(frame.ts - Date.now()) < 120_000, `ts near now: ${frame.ts}`);
  assert.deepEqual(frame.data, data);
}

/** docs/PROTOCOL.md, "Ids, cursors, epochs and resets": each connection receives messages in strictly increasing id order. */
function assertIdsIncreasing(client) {
  const ids = client.messageIds();
  for (let i = 1; i < ids.length; i += 1) {
    assert.ok(ids[i] > ids[i - 1], `ids strictly increasing on one socket: [${ids}]; ${client.seen()}`);
  }
}

function assertErrorFrame(frame, code, what) {
  assert.equal(frame.type, 'error', `${what}: ${show(frame)}`);
  assert.equal(frame.code, code, `${what}: ${show(frame)}`);
  assert.equal(typeof frame.message, 'string', `${what}: message text in ${show(frame)}`);
  assert.ok(frame.message.length > 0, `${what}: non-empty message in ${show(frame)}`);
}

const sorted = (xs) => [...xs].sort();

/** The log stream a socket saw: welcome, reset and message ids, in order (presence frames left out). */
function stream(client) {
  return client.frames
    .filter((f) => ['welcome', 'reset', 'message'].includes(f.type))
    .map((f) => (f.type === 'message' ? f.id : f.type));
}

// ---------------------------------------------------------------- main hub

describe('WebSocket transport (rate limits off)', () => {
  const hub = suiteHub({ runtime: 'miniflare', vars: { RATE_PER_SEC: '0' } });
  let url;
  before(() => {
    url = hub.url;
  });

  test('GET /rooms/{room}/ws without an Upgrade header answers 426', async () => {
    const res = await getJson(url, `/rooms/${roomName('ws426')}/ws`);
    assert.equal(res.status, 426);
    assert.equal(res.body?.error, 'upgrade_required');
  });

  test('the first frame is welcome {room, last_id, you, presence, presence_count} with an anon:<conn> identity', async () => {
    const room = roomName('welcome');
    await mustPublish(url, room, { data: 'a' });
    await mustPublish(url, room, { data: 'b' });
    const { client, welcome } = await WsClient.welcomed(url, room);
    assert.deepEqual(Object.keys(welcome).sort(), ['last_id', 'limits', 'presence', 'presence_count', 'room', 'type', 'you']);
    assert.deepEqual(welcome.limits, { max_message_bytes: 65536, rate_per_sec: 0, rate_burst: 40 });
    assert.equal(welcome.room, room);
    assert.equal(welcome.last_id, 2);
    assert.deepEqual(Object.keys(welcome.you).sort(), ['conn', 'presence_name', 'user']);
    assert.equal(typeof welcome.you.conn, 'string');
    assert.ok(welcome.you.conn.length > 0);
    assert.equal(welcome.you.user, null);
    assert.equal(welcome.you.presence_name, `anon:${welcome.you.conn}`);
    assert.deepEqual(welcome.presence, [`anon:${welcome.you.conn}`]);
    assert.equal(welcome.presence_count, 1);
    // Without since: nothing replayed.
    assert.deepEqual(client.messageIds(), []);

    // A second socket gets a different connection id.
    const second = await WsClient.welcomed(url, room);
    assert.notEqual(second.welcome.you.conn, welcome.you.conn);
  });

  test('a publish is acked to the sender and broadcast to every socket, sender included', async () => {
    const room = roomName('broadcast');
    const { client: a } = await WsClient.welcomed(url, room);
    const { client: b } = await WsClient.welcomed(url, room);
    const { client: c } = await WsClient.welcomed(url, room);

    const data = { text: 'héllo 🌍', n: [1, 2.5, null, true], nested: { deep: 'x\ny' } };
    a.send({ type: 'publish', event: 'chat.msg', data, cid: 'c-17' });
    const ack = await a.nextAck('c-17');
    assert.deepEqual(ack, { type: 'ack', cid: 'c-17', id: 1 });
    const frames = await Promise.all([a, b, c].map((s) => s.nextMessage(1)));
    for (const frame of frames) assertMessageFrame(frame, { id: 1, event: 'chat.msg', data });
    // One frame, the same for everyone.
    assert.deepEqual(frames[1], frames[0]);
    assert.deepEqual(frames[2], frames[0]);

    // Default event, another publisher.
    b.send({ type: 'publish', data: 42, cid: 'b-1' });
    assert.deepEqual(await b.nextAck('b-1'), { type: 'ack', cid: 'b-1', id: 2 });
    for (const s of [a, b, c]) assertMessageFrame(await s.nextMessage(2), { id: 2, data: 42 });

    // The stored envelope is exactly the broadcast frame without its type.
    const polled = await poll(url, room, '?since=0');
    assert.deepEqual(polled.messages, [envelopeOf(frames[0]), envelopeOf(c.ofType('message')[1])]);
    for (const s of [a, b, c]) {
      assert.deepEqual(s.messageIds(), [1, 2], s.seen());
      assertIdsIncreasing(s);
    }
  });

  test('ids are shared across transports: WS publishes are polled, HTTP publishes reach sockets, same ids', async () => {
    const room = roomName('xport');
    const { client: a } = await WsClient.welcomed(url, room);
    const { client: b } = await WsClient.welcomed(url, room);

    const ack1 = await a.publish({ via: 'ws', n: 1 }, { cid: 'x-1' });
    assert.equal(ack1.id, 1);
    const http2 = await mustPublish(url, room, { event: 'from.http', data: { via: 'http', n: 2 } });
    assert.equal(http2.id, 2);
    const ack3 = await b.publish({ via: 'ws', n: 3 }, { cid: 'x-3' });
    assert.equal(ack3.id, 3);
    const http4 = await mustPublish(url, room, { data: { via: 'http', n: 4 } });
    assert.equal(http4.id, 4);

    for (const s of [a, b]) {
      const got = [];
      for (const id of [1, 2, 3, 4]) got.push(await s.nextMessage(id));
      assert.deepEqual(s.messageIds(), [1, 2, 3, 4], s.seen());
      assertMessageFrame(got[1], { id: 2, event: 'from.http', data: { via: 'http', n: 2 } });
      assert.equal(got[1].ts, http2.ts, 'HTTP publish ts matches its broadcast');
      assert.equal(got[3].ts, http4.ts);
    }

    const polled = await poll(url, room, '?since=0');
    assert.equal(polled.last_id, 4);
    assert.deepEqual(polled.messages.map((m) => m.id), [1, 2, 3, 4]);
    assert.deepEqual(polled.messages, a.ofType('message').map(envelopeOf));
    for (const m of polled.messages) assert.deepEqual(Object.keys(m).sort(), ENVELOPE_KEYS);
  });

  test('a repeated cid is acked with the original id and neither stored nor broadcast again, also after a reconnect', async () => {
    const room = roomName('dedupe');
    const { client: a } = await WsClient.welcomed(url, room);
    const { client: watcher } = await WsClient.welcomed(url, room);
    const data = { order: 'once' };

    const first = await a.publish(data, { cid: 'dup-1' });
    assert.equal(first.id, 1);
    await a.nextMessage(1);
    await watcher.nextMessage(1);

    // Same socket, same cid: original id again.
    const again = await a.publish(data, { cid: 'dup-1' });
    assert.deepEqual(again, { type: 'ack', cid: 'dup-1', id: 1 });
    // A barrier: when a later message arrives, a re-broadcast of 1 would already have.
    const barrier = await a.publish('barrier-1', { cid: 'dup-barrier-1' });
    assert.equal(barrier.id, 2, 'the retry took no id');
    await a.nextMessage(2);
    await watcher.nextMessage(2);
    assert.deepEqual(a.messageIds(), [1, 2], a.seen());
    assert.deepEqual(watcher.messageIds(), [1, 2], watcher.seen());

    // Reconnect: close the first socket, retry the same cid on a new one.
    const closed = await a.close(1000);
    assert.equal(closed.code, 1000);
    const { client: b } = await WsClient.welcomed(url, room);
    const retried = await b.publish(data, { cid: 'dup-1' });
    assert.deepEqual(retried, { type: 'ack', cid: 'dup-1', id: 1 });
    const barrier2 = await b.publish('barrier-2', { cid: 'dup-barrier-2' });
    assert.equal(barrier2.id, 3, 'the retry after reconnect took no id');
    await b.nextMessage(3);
    await watcher.nextMessage(3);
    assert.deepEqual(b.messageIds(), [3], b.seen());
    assert.deepEqual(watcher.messageIds(), [1, 2, 3], watcher.seen());

    const polled = await poll(url, room, '?since=0');
    assert.deepEqual(polled.messages.map((m) => m.id), [1, 2, 3]);
    assert.equal(polled.messages.filter((m) => JSON.stringify(m.data) === JSON.stringify(data)).length, 1,
      `exactly one stored copy: ${JSON.stringify(polled.messages)}`);
    assert.equal(polled.last_id, 3);
  });

  test('since=2 replays 3,4,5 after welcome, then live 6: no gap, no duplicate', async () => {
    const room = roomName('since');
    for (let i = 1; i <= 5; i += 1) await mustPublish(url, room, { data: `m${i}` });
    const { client, welcome } = await WsClient.welcomed(url, room, '?since=2');
    assert.equal(welcome.last_id, 5);
    for (const id of [3, 4, 5]) assertMessageFrame(await client.nextMessage(id), { id, data: `m${id}` });

    const live = await mustPublish(url, room, { data: 'm6' });
    assert.equal(live.id, 6);
    assertMessageFrame(await client.nextMessage(6), { id: 6, data: 'm6' });

    // The whole stream, in order: welcome, the replay, the live message; no reset.
    assert.deepEqual(stream(client), ['welcome', 3, 4, 5, 6], client.seen());
    assert.equal(client.frames.length, 5, `no other frame on a lone socket; ${client.seen()}`);
  });

  test('since=0 replays the whole log without a reset; since=last_id replays nothing', async () => {
    const room = roomName('since0');
    for (let i = 1; i <= 3; i += 1) await mustPublish(url, room, { data: i });
    const { client: all } = await WsClient.welcomed(url, room, '?since=0');
    for (const id of [1, 2, 3]) await all.nextMessage(id);
    const { client: none } = await WsClient.welcomed(url, room, '?since=3');
    await mustPublish(url, room, { data: 4 });
    await all.nextMessage(4);
    await none.nextMessage(4);
    assert.deepEqual(stream(all), ['welcome', 1, 2, 3, 4], all.seen());
    assert.deepEqual(stream(none), ['welcome', 4], none.seen());
  });

  test('since=abc refuses the upgrade with 400', async () => {
    const room = roomName('since-bad');
    const res = await refusedUpgrade(wsUrl(url, room, '?since=abc'));
    assert.equal(res.status, 400, res.text);
    assert.equal(res.body?.error, 'invalid_param', res.text);
    assert.equal((await roomState(url, room)).connections.ws, 0, 'no socket was accepted');
  });

  test('text ping is answered pong', async () => {
    const room = roomName('ping');
    const { client } = await WsClient.welcomed(url, room);
    client.send('ping');
    assert.equal(await client.next((f) => f === 'pong', 'pong'), 'pong');
    client.send('ping');
    await client.next((f) => f === 'pong', 'second pong');
    // Still a working session afterwards.
    assert.equal((await client.publish('after ping', { cid: 'p-1' })).id, 1);
  });

  test('presence: join/leave frames, presence frames and GET /rooms/{room} follow the open sockets', async () => {
    const room = roomName('presence');
    const { client: a, welcome: wa } = await WsClient.welcomed(url, room);
    const nameA = wa.you.presence_name;
    assert.equal(nameA, `anon:${wa.you.conn}`);

    const { client: b, welcome: wb } = await WsClient.welcomed(url, room);
    const nameB = wb.you.presence_name;
    assert.deepEqual(sorted(wb.presence), sorted([nameA, nameB]), 'welcome lists every member');
    assert.deepEqual(await a.nextType('join'), { type: 'join', user: nameB });

    const { client: c, welcome: wc } = await WsClient.welcomed(url, room);
    const nameC = wc.you.presence_name;
    assert.deepEqual(await a.nextType('join'), { type: 'join', user: nameC });
    assert.deepEqual(await b.nextType('join'), { type: 'join', user: nameC });

    a.send({ type: 'presence' });
    const p = await a.nextType('presence');
    assert.deepEqual(Object.keys(p).sort(), ['count', 'members', 'type']);
    assert.deepEqual(sorted(p.members), sorted([nameA, nameB, nameC]));
    assert.equal(p.count, 3);

    let state = await roomState(url, room);
    assert.equal(state.connections.ws, 3);
    assert.deepEqual(sorted(state.presence), sorted([nameA, nameB, nameC]));

    // B leaves: A and C hear it; the room counts follow.
    await b.close(1000);
    assert.deepEqual(await a.nextType('leave'), { type: 'leave', user: nameB });
    assert.deepEqual(await c.nextType('leave'), { type: 'leave', user: nameB });
    ({ value: state } = await waitFor(async () => {
      const s = await roomState(url, room);
      return s.connections.ws === 2 ? s : null;
    }, 5000, 'connections.ws === 2 after one close'));
    assert.deepEqual(sorted(state.presence), sorted([nameA, nameC]));
    c.send({ type: 'presence' });
    assert.deepEqual(sorted((await c.nextType('presence')).members), sorted([nameA, nameC]));

    // A terminated without a close handshake still leaves.
    a.ws.terminate();
    await a.waitClosed();
    assert.deepEqual(await c.nextType('leave'), { type: 'leave', user: nameA });
    await c.close(1000);
    ({ value: state } = await waitFor(async () => {
      const s = await roomState(url, room);
      return s.connections.ws === 0 ? s : null;
    }, 5000, 'connections.ws === 0 after every close'));
    assert.deepEqual(state.presence, []);
  });

  test('bad input gets an error frame, the socket stays open, and nothing is stored', async () => {
    const room = roomName('bad');
    const { client } = await WsClient.welcomed(url, room);
    const cases = [
      ['malformed JSON', '{"type":"publish","data":', 'invalid_json'],
      ['not JSON at all', 'hello', 'invalid_json'],
      ['unknown type', JSON.stringify({ type: 'shout', data: 1 }), 'invalid_body'],
      ['no type', JSON.stringify({ data: 1 }), 'invalid_body'],
      ['publish without data', JSON.stringify({ type: 'publish', cid: 'no-data' }), 'invalid_body'],
      ['reserved event join', JSON.stringify({ type: 'publish', event: 'join', data: 1, cid: 'r-1' }), 'reserved_event'],
      ['reserved event reset', JSON.stringify({ type: 'publish', event: 'reset', data: 1, cid: 'r-2' }), 'reserved_event'],
      ['binary frame', Buffer.from(JSON.stringify({ type: 'publish', data: 1 })), 'invalid_body'],
    ];
    for (const [what, frame, code] of cases) {
      client.send(frame);
      const err = await client.nextType('error');
      assertErrorFrame(err, code, what);
      assert.equal(client.ws.readyState, WebSocket.OPEN, `${what}: socket still open`);
    }
    assert.deepEqual(client.messageIds(), [], 'nothing broadcast');
    assert.equal((await roomState(url, room)).last_id, 0, 'nothing stored');

    // The same socket still publishes.
    const ack = await client.publish('fine', { cid: 'ok-1' });
    assert.equal(ack.id, 1);
    await client.nextMessage(1);
    const polled = await poll(url, room, '?since=0');
    assert.deepEqual(polled.messages.map((m) => m.data), ['fine']);
    assert.equal(polled.last_id, 1);
  });

  test('a client close(1000) is answered: the close event arrives with 1000', async () => {
    const room = roomName('close');
    const { client } = await WsClient.welcomed(url, room);
    client.ws.close(1000, 'bye');
    const info = await client.waitClosed(5000);
    assert.equal(info.code, 1000);
    await waitFor(async () => (await roomState(url, room)).connections.ws === 0, 5000, 'connections.ws === 0');
  });
});

// ---------------------------------------------------------------- retention

describe('WebSocket presence with PRESENCE_MAX_MEMBERS=2', () => {
  const hub = suiteHub({ runtime: 'miniflare', vars: { RATE_PER_SEC: '0', PRESENCE_MAX_MEMBERS: '2' } });
  let url;
  before(() => {
    url = hub.url;
  });

  /** Asks `client` for presence and returns the answer (every frame sent to it before is in by then). */
  async function askPresence(client) {
    client.send({ type: 'presence' });
    return client.nextType('presence');
  }

  test('above the limit joins and leaves go quiet, lists are cut and counted, and the crossings send snapshots', async () => {
    const room = roomName('crowd');
    const firstTwo = (names) => sorted(names).slice(0, 2);

    const { client: a, welcome: wa } = await WsClient.welcomed(url, room);
    const nameA = wa.you.presence_name;
    const { client: b, welcome: wb } = await WsClient.welcomed(url, room);
    const nameB = wb.you.presence_name;
    assert.deepEqual(await a.nextType('join'), { type: 'join', user: nameB });
    assert.equal(wb.presence_count, 2);

    // C takes the room above the limit: A and B get one snapshot, no join.
    const { client: c, welcome: wc } = await WsClient.welcomed(url, room);
    const nameC = wc.you.presence_name;
    const three = [nameA, nameB, nameC];
    assert.deepEqual(wc.presence, firstTwo(three), 'the welcome lists the first two members');
    assert.equal(wc.presence_count, 3);
    for (const [who, client] of [['A', a], ['B', b]]) {
      assert.deepEqual(await client.nextType('presence'), { type: 'presence', members: firstTwo(three), count: 3 }, `${who}'s snapshot`);
    }

    // D joins above the limit: nobody is told; asking gives the cut list and the count.
    const { client: d, welcome: wd } = await WsClient.welcomed(url, room);
    const four = [...three, wd.you.presence_name];
    assert.equal(wd.presence_count, 4);
    assert.deepEqual(await askPresence(a), { type: 'presence', members: firstTwo(four), count: 4 });
    assert.deepEqual(a.ofType('join').map((f) => f.user), [nameB], `A heard only B's join; ${a.seen()}`);
    assert.deepEqual(b.ofType('join'), [], `B heard no join; ${b.seen()}`);
    assert.deepEqual(sorted((await roomState(url, room)).presence), sorted(four), 'GET /rooms/{room} lists every member');

    // D leaves (4 → 3): quiet. C leaves (3 → 2): a snapshot with the full list.
    await d.close(1000);
    await c.close(1000);
    for (const [who, client] of [['A', a], ['B', b]]) {
      assert.deepEqual(await client.nextType('presence'), { type: 'presence', members: sorted([nameA, nameB]), count: 2 }, `${who}'s snapshot back at the limit`);
      assert.deepEqual(client.ofType('leave'), [], `${who} heard no leave above the limit; ${client.seen()}`);
    }

    // Below the limit again, leaves are announced one by one.
    await b.close(1000);
    assert.deepEqual(await a.nextType('leave'), { type: 'leave', user: nameB });
    assert.deepEqual(await askPresence(a), { type: 'presence', members: [nameA], count: 1 });
  });
});

describe('WebSocket resume with HISTORY_LIMIT=5', () => {
  const hub = suiteHub({ runtime: 'miniflare', vars: { HISTORY_LIMIT: '5', RATE_PER_SEC: '0' } });
  let room;

  before(async () => {
    room = roomName('ws-retain');
    for (let i = 1; i <= 12; i += 1) await mustPublish(hub.url, room, { data: i });
  });

  test('since=1 gets welcome, reset history_exceeded first_id 8, then 8..12', async () => {
    const { client, welcome } = await WsClient.welcomed(hub.url, room, '?since=1');
    assert.equal(welcome.last_id, 12);
    const reset = await client.nextType('reset');
    assert.deepEqual(reset, { type: 'reset', reason: 'history_exceeded', first_id: 8 });
    for (const id of [8, 9, 10, 11, 12]) assertMessageFrame(await client.nextMessage(id), { id, data: id });
    assert.deepEqual(stream(client), ['welcome', 'reset', 8, 9, 10, 11, 12], client.seen());
  });

  test('since=99 on a room at 12 gets a cursor_ahead reset', async () => {
    const { client, welcome } = await WsClient.welcomed(hub.url, room, '?since=99');
    assert.equal(welcome.last_id, 12);
    const reset = await client.nextType('reset');
    assert.equal(reset.reason, 'cursor_ahead', show(reset));
    assert.equal(client.frames[1], reset, `reset right after welcome; ${client.seen()}`);
  });
});

// ---------------------------------------------------------------- size limit

describe('WebSocket with MAX_MESSAGE_BYTES=1024', () => {
  const hub = suiteHub({ runtime: 'miniflare', vars: { MAX_MESSAGE_BYTES: '1024', RATE_PER_SEC: '0' } });

  test('a 2000-byte frame closes the socket with 1009 and stores nothing', async () => {
    const room = roomName('big');
    const { client } = await WsClient.welcomed(hub.url, room);
    assert.equal((await client.publish('small', { cid: 's-1' })).id, 1);

    const frame = JSON.stringify({ type: 'publish', data: 'x'.repeat(2000), cid: 'big-1' });
    assert.ok(frame.length > 2000);
    client.send(frame);
    const info = await client.waitClosed();
    assert.equal(info.code, 1009, client.seen());
    assert.deepEqual(client.ofType('ack').map((a) => a.id), [1], 'the big frame was not acked');
    assert.equal((await roomState(hub.url, room)).last_id, 1, 'nothing stored');
  });
});

// ---------------------------------------------------------------- rate limit

describe('WebSocket with RATE_PER_SEC=1, RATE_BURST=3', () => {
  const hub = suiteHub({ runtime: 'miniflare', vars: { RATE_PER_SEC: '1', RATE_BURST: '3' } });

  test('a burst of 10 gets 3 acks and 7 rate_limited errors naming their cid; a flood closes with 1008', async () => {
    const room = roomName('rate');
    const { client } = await WsClient.welcomed(hub.url, room);
    const isReply = (f) => f.type === 'ack' || f.type === 'error';

    for (let i = 0; i < 10; i += 1) client.send({ type: 'publish', data: `r${i}`, cid: `rl-${i}` });
    const replies = [];
    for (let i = 0; i < 10; i += 1) replies.push(await client.next(isReply, `reply ${i + 1} of 10`));
    const acks = replies.filter((f) => f.type === 'ack');
    const errors = replies.filter((f) => f.type === 'error');
    assert.equal(acks.length, 3, `acks: ${replies.map(show).join(', ')}`);
    assert.equal(errors.length, 7, `errors: ${replies.map(show).join(', ')}`);
    for (const e of errors) assertErrorFrame(e, 'rate_limited', 'publish over the rate');
    for (const e of errors) assert.ok(e.retry_after_ms > 0 && e.retry_after_ms <= 1000, show(e));
    assert.deepEqual(acks.map((a) => a.cid), ['rl-0', 'rl-1', 'rl-2']);
    assert.deepEqual(errors.map((e) => e.cid), range(3, 9).map((i) => `rl-${i}`), 'each error names its publish');
    assert.deepEqual(acks.map((a) => a.id), [1, 2, 3]);

    const polled = await poll(hub.url, room, '?since=0');
    assert.deepEqual(polled.messages.map((m) => m.id), acks.map((a) => a.id));
    assert.deepEqual(polled.messages.map((m) => m.data), ['r0', 'r1', 'r2']);
    assert.equal(polled.last_id, 3);

    // A flood past the socket's frame budget (2x the publish budget, at
    // least a burst of 200) and its strikes: the hub closes with 1008.
    for (let i = 10; i < 400; i += 1) client.send({ type: 'publish', data: `r${i}`, cid: `rl-${i}` });
    const info = await client.waitClosed();
    assert.equal(info.code, 1008, client.seen());
    assert.ok(client.ofType('error').length > 7, 'more rate_limited errors before the close');

    // Whatever was stored is exactly what was acked.
    const allAcks = client.ofType('ack');
    const after = await poll(hub.url, room, '?since=0');
    assert.deepEqual(after.messages.map((m) => m.id), allAcks.map((a) => a.id));
  });
});

// ---------------------------------------------------------------- hibernation

describe('WebSocket hibernation', () => {
  const hub = suiteHub({ runtime: 'miniflare', vars: { RATE_PER_SEC: '0' } });

  test('an idle room hibernates and wakes keeping every socket, its identity and cid dedupe', async (t) => {
    const room = roomName('hibernate');
    const sockets = [];
    const names = [];
    for (let i = 0; i < 3; i += 1) {
      const { client, welcome } = await WsClient.welcomed(hub.url, room);
      sockets.push(client);
      names.push(welcome.you.presence_name);
    }
    const [s1, s2, s3] = sockets;

    // A cid acknowledged before hibernation.
    const pre = await s1.publish({ before: 'sleep' }, { cid: 'hib-pre' });
    assert.equal(pre.id, 1);
    for (const s of sockets) await s.nextMessage(1);

    const initial = await roomState(hub.url, room);
    assert.equal(initial.loads, 1, JSON.stringify(initial));
    assert.equal(initial.connections.ws, 3);

    let loads = initial.loads;
    let lastAck = pre;
    let rounds = 0;
    while (loads <= 1 && rounds < 4) {
      rounds += 1;
      // Unavoidable wait: nothing signals that the runtime hibernated the
      // room. Miniflare evicts an idle room after roughly 10-20 s; any
      // request or socket message to the room during this time would keep
      // it awake, so nothing is sent here.
      await sleep(15_000);

      // The runtime's auto-response answers without waking the room.
      for (const s of sockets) s.send('ping');
      for (const s of sockets) await s.next((f) => f === 'pong', `pong in round ${rounds}`);

      const ack = await s1.publish({ round: rounds }, { cid: `hib-round-${rounds}` });
      assert.equal(ack.id, lastAck.id + 1, `ids continue across a wake (round ${rounds})`);
      lastAck = ack;
      for (const s of sockets) assertMessageFrame(await s.nextMessage(ack.id), { id: ack.id, data: { round: rounds } });

      loads = (await roomState(hub.url, room)).loads;
    }
    t.diagnostic(`loads ${loads} after ${rounds} idle round(s) of 15 s`);
    assert.ok(loads > 1, `the room reloaded (loads ${loads} after ${rounds} idle rounds of 15 s)`);

    // Identities survived: presence from a frame and from the room state.
    s2.send({ type: 'presence' });
    const presence = await s2.nextType('presence');
    assert.deepEqual(sorted(presence.members), sorted(names));
    const state = await roomState(hub.url, room);
    assert.equal(state.connections.ws, 3);
    assert.deepEqual(sorted(state.presence), sorted(names));

    // The cid from before hibernation is still deduplicated.
    const retried = await s3.publish({ before: 'sleep' }, { cid: 'hib-pre' });
    assert.deepEqual(retried, { type: 'ack', cid: 'hib-pre', id: 1 });
    const barrier = await s3.publish('after-wake', { cid: 'hib-barrier' });
    assert.equal(barrier.id, lastAck.id + 1, 'the retry took no id');
    for (const s of sockets) {
      await s.nextMessage(barrier.id);
      const ids = s.messageIds();
      assert.equal(ids.filter((id) => id === 1).length, 1, `message 1 delivered once: [${ids}]`);
      assert.deepEqual(ids, Array.from({ length: barrier.id }, (_, i) => i + 1), s.seen());
      assertIdsIncreasing(s);
    }
    const polled = await poll(hub.url, room, '?since=0');
    assert.equal(polled.messages.filter((m) => JSON.stringify(m.data) === '{"before":"sleep"}').length, 1);
    assert.deepEqual(polled.messages.map((m) => m.id), s1.messageIds());
  });
});
