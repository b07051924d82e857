// Retention by age (docs/PROTOCOL.md, "Retention, stats and usage"),
// against the built Worker on bare workerd:
// - HISTORY_TTL_SECS: a message older than the TTL is gone from every
//   transport, a resume from before it gets `reset history_exceeded`, and
//   ids continue after everything expired, across a restart.
// - ROOM_IDLE_TTL_SECS: an idle room erases itself (new epoch: old ETags
//   never match, old cursors get `reset cursor_ahead`, ids start again); a
//   room with a hibernated WebSocket still connected, or one that keeps
//   publishing, is kept.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHub } from '../scripts/launch/hub.mjs';
import { stateDir } from '../scripts/launch/state.mjs';
import { freePort } from '../scripts/launch/ports.mjs';
import {
  roomName,
  mustPublish,
  roomState,
  request,
  suiteHub,
  waitFor,
  sleep,
  show,
  WsClient,
  SseClient,
} from './support.mjs';

const HISTORY_TTL_SECS = 2;

describe('HISTORY_TTL_SECS: messages older than the TTL leave the history', () => {
  const hub = suiteHub({ runtime: 'workerd', vars: { HISTORY_TTL_SECS: String(HISTORY_TTL_SECS), RATE_PER_SEC: '0' } });

  test('an expired message is gone on every transport and a resume from before it gets reset', async () => {
    const room = roomName('ttl');
    await mustPublish(hub.url, room, { data: { n: 1 } });
    // The second message must be younger than the first by a clear margin.
    await sleep(1200);
    await mustPublish(hub.url, room, { data: { n: 2 } });
    // Reading the room trims what expired: wait until the first is gone.
    await waitFor(async () => (await roomState(hub.url, room)).first_id === 2, 10_000, 'message 1 expires');
    const state = await roomState(hub.url, room);
    assert.equal(state.last_id, 2);

    const poll = await request(hub.url, `/rooms/${room}/messages?since=0`);
    assert.equal(poll.status, 200);
    assert.deepEqual(poll.body.reset, { reason: 'history_exceeded', first_id: 2 }, show(poll.body));
    assert.deepEqual(poll.body.messages.map((m) => m.id), [2]);

    const ws = await WsClient.open(hub.url, room, '?since=0');
    const reset = await ws.nextType('reset');
    assert.equal(reset.reason, 'history_exceeded');
    assert.equal(reset.first_id, 2);
    await ws.nextMessage(2);
    assert.deepEqual(ws.messageIds(), [2]);

    const sse = await SseClient.connect(hub.url, `/rooms/${room}/events`, { 'Last-Event-ID': '0' });
    await sse.nextId(2);
    assert.deepEqual(sse.ids(), [2]);
    assert.ok(sse.events().some((e) => e.event === 'reset'), show(sse.events()));
  });

  test('when everything expired, ids go on (also after a restart) and a resume from the last id needs no reset', async () => {
    const state = stateDir();
    const port = await freePort();
    const vars = { HISTORY_TTL_SECS: '1', RATE_PER_SEC: '0' };
    let hub2 = await startHub({ runtime: 'workerd', port, stateDir: state.dir, vars });
    try {
      const room = roomName('ttl-all');
      await mustPublish(hub2.url, room, { data: { n: 1 } });
      await mustPublish(hub2.url, room, { data: { n: 2 } });
      await waitFor(async () => (await roomState(hub2.url, room)).first_id === 3, 10_000, 'both expire');
      const fresh = await request(hub2.url, `/rooms/${room}/messages?since=2`);
      assert.equal(fresh.status, 200);
      assert.equal(fresh.body.reset, undefined, show(fresh.body));
      assert.deepEqual(fresh.body.messages, []);
      await hub2.crash();
      hub2 = await startHub({ runtime: 'workerd', port, stateDir: state.dir, vars });
      const after = await roomState(hub2.url, room);
      assert.equal(after.last_id, 2, show(after));
      assert.equal((await mustPublish(hub2.url, room, { data: { n: 3 } })).id, 3, 'ids continue after the history emptied');
    } finally {
      await hub2?.stop();
      state.cleanup();
    }
  });
});

describe('ROOM_IDLE_TTL_SECS: an idle room erases itself', () => {
  const hub = suiteHub({ runtime: 'workerd', vars: { ROOM_IDLE_TTL_SECS: '2', RATE_PER_SEC: '0' } });

  test('a room with no connection and no publish for the TTL is erased: new epoch, old ETag and cursor reset', async () => {
    const room = roomName('idle');
    await mustPublish(hub.url, room, { data: { n: 1 } });
    await mustPublish(hub.url, room, { data: { n: 2 } });
    const before = await request(hub.url, `/rooms/${room}/messages?since=0`);
    const etag = before.headers.get('etag');
    assert.ok(etag);
    // Reading the room is not activity: only connections and publishes are.
    await waitFor(async () => (await roomState(hub.url, room)).last_id === 0, 15_000, 'the idle room is erased');

    const conditional = await request(hub.url, `/rooms/${room}/messages?since=0`, { headers: { 'If-None-Match': etag } });
    assert.equal(conditional.status, 200, 'an ETag of the erased log never matches');
    assert.notEqual(conditional.headers.get('etag'), etag);
    const resumed = await request(hub.url, `/rooms/${room}/messages?since=2`);
    assert.equal(resumed.body.reset?.reason, 'cursor_ahead', show(resumed.body));
    assert.equal((await mustPublish(hub.url, room, { data: { n: 3 } })).id, 1, 'a new log starts at 1');
  });

  test('a room that keeps publishing is kept', async () => {
    const room = roomName('busy');
    const started = Date.now();
    let n = 0;
    // Publish every 500 ms for well over two TTLs.
    while (Date.now() - started < 5_000) {
      await mustPublish(hub.url, room, { data: { n: ++n } });
      await sleep(500);
    }
    const state = await roomState(hub.url, room);
    assert.ok(state.usage.alarms >= 1, `the idle check ran: ${show(state.usage)}`);
    assert.equal(state.first_id, 1, show(state));
    assert.equal(state.last_id, n);
  });
});

describe('ROOM_IDLE_TTL_SECS: a hibernated WebSocket keeps its room', () => {
  // Long enough for the room to hibernate (workerd: ~10 s without events)
  // before the idle check runs.
  const hub = suiteHub({ runtime: 'workerd', vars: { ROOM_IDLE_TTL_SECS: '12', RATE_PER_SEC: '0' } });

  test('the idle check finds the socket and keeps the room', { timeout: 60_000 }, async () => {
    const room = roomName('held');
    const ws = await WsClient.open(hub.url, room);
    await ws.nextType('welcome');
    await mustPublish(hub.url, room, { data: { n: 1 } });
    await ws.nextMessage(1);
    const loadsBefore = (await roomState(hub.url, room)).loads;
    // Any request would keep the room awake, so nothing can be polled
    // here: leave the room alone past its idle check (12 s after the
    // publish; the room hibernates ~10 s after its last event).
    await sleep(16_000);
    const state = await roomState(hub.url, room);
    assert.ok(state.usage.alarms >= 1, `the idle check ran: ${show(state.usage)}`);
    assert.equal(state.last_id, 1, `kept: ${show(state)}`);
    assert.equal(state.connections.ws, 1);
    assert.ok(state.loads > loadsBefore, `the room hibernated and woke (loads ${loadsBefore} → ${state.loads})`);
    // What the room counted before it hibernated survived it.
    assert.equal(state.stats.delivered.ws, 1, show(state.stats));
    assert.equal(state.stats.published, 1);
    // The socket is still served.
    await mustPublish(hub.url, room, { data: { n: 2 } });
    await ws.nextMessage(2);
  });
});
