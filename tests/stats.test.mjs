// A room's stats and usage meter (docs/PROTOCOL.md, "Retention, stats and
// usage"), against the built Worker on bare workerd: they count exactly
// what a test did (publishes, deliveries per transport, bytes, requests,
// WebSocket messages, peak connections) and survive a SIGKILL of workerd.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHub } from '../scripts/launch/hub.mjs';
import { stateDir } from '../scripts/launch/state.mjs';
import { freePort } from '../scripts/launch/ports.mjs';
import { roomName, publish, roomState, request, show, WsClient, SseClient, closeWsClients, closeSseClients } from './support.mjs';

describe('stats and usage count what clients did, and survive a restart', () => {
  test('N publishes, M deliveries per transport, bytes and requests; the same after a SIGKILL', async () => {
    const state = stateDir();
    const port = await freePort();
    const vars = { RATE_PER_SEC: '0' };
    let hub = await startHub({ runtime: 'workerd', port, stateDir: state.dir, vars });
    try {
      const room = roomName('meter');
      // Requests that reach the room, counted by hand as the test makes them.
      let requests = 0;
      const a = await WsClient.open(hub.url, room);
      const b = await WsClient.open(hub.url, room);
      requests += 2;
      await a.nextType('welcome');
      await b.nextType('welcome');
      const sse = await SseClient.connect(hub.url, `/rooms/${room}/events`);
      requests += 1;

      const bodies = [1, 2, 3].map((n) => JSON.stringify({ data: { n, text: 'x'.repeat(n * 10) } }));
      for (const body of bodies) {
        const res = await publish(hub.url, room, body);
        assert.equal(res.status, 201);
        requests += 1;
      }
      for (const ws of [a, b]) await ws.nextMessage(3);
      await sse.nextId(3);
      // One WebSocket message in: a presence request, answered by the room.
      a.send({ type: 'presence' });
      await a.nextType('presence');
      const poll = await request(hub.url, `/rooms/${room}/messages?since=0`);
      assert.equal(poll.body.messages.length, 3);
      requests += 1;

      const before = await roomState(hub.url, room);
      requests += 1;
      const { stats, usage } = before;
      assert.equal(stats.published, 3);
      assert.deepEqual(stats.delivered, { ws: 6, sse: 3, poll: 3 }, show(stats));
      const bytesIn = bodies.reduce((n, b) => n + Buffer.byteLength(b), 0) + Buffer.byteLength(JSON.stringify({ type: 'presence' }));
      assert.equal(stats.bytes_in, bytesIn);
      assert.ok(stats.bytes_out >= 12 * 20, `bytes out: ${stats.bytes_out}`);
      assert.equal(stats.peak_connections, 3);
      assert.ok(stats.since > 0 && stats.since <= Date.now());
      assert.equal(usage.requests, requests, show(usage));
      assert.equal(usage.ws_messages_in, 1);
      assert.ok(usage.rows_written >= 3, show(usage));
      assert.ok(usage.rows_read > 0, show(usage));
      assert.ok(usage.stored_bytes > 0, show(usage));
      assert.ok(usage.awake_ms > 0, show(usage));
      assert.ok(usage.stream_ms > 0, `the SSE stream held the room awake: ${show(usage)}`);

      closeSseClients();
      await closeWsClients();
      await hub.crash();
      hub = await startHub({ runtime: 'workerd', port, stateDir: state.dir, vars });
      const after = await roomState(hub.url, room);
      assert.deepEqual({ ...after.stats, loads: 0 }, { ...stats, loads: 0 }, 'stats survive the restart');
      assert.equal(after.stats.loads, stats.loads + 1, 'one more load');
      assert.equal(after.usage.requests, requests + 1, 'every request before the crash, and this one');
      assert.equal(after.usage.ws_messages_in, 1);
      assert.ok(after.usage.rows_written >= usage.rows_written);
      assert.ok(after.usage.awake_ms >= usage.awake_ms);
    } finally {
      closeSseClients();
      await closeWsClients();
      await hub?.stop();
      state.cleanup();
    }
  });

  test('a room that was never published to reports its counters and writes nothing', async () => {
    const hub = await startHub({ runtime: 'workerd', vars: { RATE_PER_SEC: '0' } });
    try {
      const room = roomName('unwritten');
      await request(hub.url, `/rooms/${room}/messages`);
      const s = await roomState(hub.url, room);
      assert.equal(s.stats.published, 0);
      assert.equal(s.usage.requests, 2, show(s.usage));
      assert.equal(s.usage.stored_bytes, 0, 'no storage was created');
      assert.equal(s.usage.rows_written, 0, show(s.usage));
    } finally {
      await hub.stop();
    }
  });
});
