// The app's backend in the loop (docs/PROTOCOL.md, "The backend's key"),
// against the built Worker: HUB_API_KEY and who may use the key-only
// endpoints, POST /publish to many rooms (idempotent, per-room results,
// `from` set by the backend), POST /rooms/{room}/disconnect ending one
// user's connections on every transport, DELETE /rooms/{room} ending all of
// them and starting the room again under a new epoch.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { suiteHub, roomName, WsClient, SseClient, request, waitFor, show } from './support.mjs';

const SECRET = 'backend-secret-0123456789abcdef-0123456789abcdef';
const KEY = 'backend-key-0123456789abcdef-0123456789abcdef';
const OLD_KEY = 'backend-old-key-0123456789abcdef-0123456789ab';
const b64url = (x) => Buffer.from(x).toString('base64url');
const nowS = () => Math.floor(Date.now() / 1000);
function tokenFor(sub, can = ['subscribe', 'publish']) {
  const input = `${b64url('{"alg":"HS256"}')}.${b64url(JSON.stringify({ sub, exp: nowS() + 600, rooms: ['*'], can }))}`;
  return `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
}
const bearer = (t) => ({ Authorization: `Bearer ${t}` });
const json = (body, headers = {}) => ({
  method: 'POST',
  headers: { 'Content-Type': 'application/json', ...headers },
  body: JSON.stringify(body),
});


describe('the backend key on a hub with HUB_SECRET', () => {
  const hub = suiteHub({ runtime: 'miniflare', vars: { HUB_SECRET: SECRET, HUB_API_KEY: `${KEY},${OLD_KEY}`, RATE_PER_SEC: '0' } });
  const keyOnly = (room) => [
    ['POST /publish', '/publish', json({ rooms: [room], data: 1 })],
    ['disconnect', `/rooms/${room}/disconnect`, json({ user: 'bob' })],
    ['DELETE', `/rooms/${room}`, { method: 'DELETE' }],
  ];

  test('key-only endpoints: 401 without credentials, 403 with a user token, 401 for the key in a URL', async () => {
    const room = roomName('guard');
    for (const [name, path, init] of keyOnly(room)) {
      const none = await request(hub.url, path, init);
      assert.equal(none.status, 401, `${name} without a key: ${show(none.body)}`);
      const user = await request(hub.url, path, { ...init, headers: { ...init.headers, ...bearer(tokenFor('alice')) } });
      assert.equal(user.status, 403, `${name} with a user token: ${show(user.body)}`);
      const inUrl = await request(hub.url, `${path}${path.includes('?') ? '&' : '?'}token=${KEY}`, init);
      assert.equal(inUrl.status, 401, `${name} with the key in the URL`);
    }
    const readWithKeyInUrl = await request(hub.url, `/rooms/${room}/messages?token=${KEY}`);
    assert.equal(readWithKeyInUrl.status, 401);
    assert.match(readWithKeyInUrl.body.message, /never accepted in a URL/);
  });

  test('POST /publish: one entry per room in order, the backend sets from, a retry stores nothing twice', async () => {
    const rooms = [roomName('fan-a'), 'not a room', roomName('fan-b')];
    const body = { rooms, event: 'news', data: { text: 'hello all' }, from: 'system', idempotency_key: 'announce-1' };
    const first = await request(hub.url, '/publish', json(body, bearer(KEY)));
    assert.equal(first.status, 200, show(first.body));
    const { results } = first.body;
    assert.deepEqual(results.map((r) => r.room), rooms);
    assert.equal(results[0].id, 1);
    assert.equal(results[1].error.error, 'invalid_room');
    assert.equal(results[2].id, 1);
    const again = await request(hub.url, '/publish', json(body, bearer(OLD_KEY)));
    assert.deepEqual(again.body.results, results, 'the same ids, with the previous key too');
    for (const room of [rooms[0], rooms[2]]) {
      const log = await request(hub.url, `/rooms/${room}/messages?since=0`, { headers: bearer(tokenFor('reader')) });
      assert.equal(log.body.messages.length, 1, 'stored once');
      assert.equal(log.body.messages[0].from, 'system');
      assert.equal(log.body.messages[0].event, 'news');
    }
    // The backend publishes to one room too, with a `from` of its own.
    const one = await request(hub.url, `/rooms/${rooms[0]}/messages`, json({ data: 2, from: 'billing' }, bearer(KEY)));
    assert.equal(one.status, 201, show(one.body));
    const bad = await request(hub.url, '/publish', json({ rooms: [], data: 1 }, bearer(KEY)));
    assert.equal(bad.status, 400);
    const tooMany = await request(hub.url, '/publish', json({ rooms: Array.from({ length: 101 }, (_, i) => `r${i}`), data: 1 }, bearer(KEY)));
    assert.equal(tooMany.status, 400);
  });

  test('disconnect ends only that user\'s connections, on every transport', async () => {
    const room = roomName('kick');
    await request(hub.url, `/rooms/${room}/messages`, json({ data: 'seed' }, bearer(KEY)));
    const { client: bobWs } = await WsClient.welcomed(hub.url, room, `?token=${tokenFor('bob')}`);
    const { client: aliceWs } = await WsClient.welcomed(hub.url, room, `?token=${tokenFor('alice')}`);
    const bobSse = await SseClient.connect(hub.url, `/rooms/${room}/events`, bearer(tokenFor('bob')));
    const bobPoll = request(hub.url, `/rooms/${room}/messages?since=1&wait=20`, { headers: bearer(tokenFor('bob')) });
    await waitFor(async () => (await request(hub.url, `/rooms/${room}`, { headers: bearer(KEY) })).body.connections.poll === 1, 5000, 'the held poll');

    const ticket = (await request(hub.url, `/rooms/${room}/ticket`, { method: 'POST', headers: bearer(tokenFor('bob')) })).body.ticket;
    const res = await request(hub.url, `/rooms/${room}/disconnect`, json({ user: 'bob' }, bearer(KEY)));
    assert.equal(res.status, 200, show(res.body));
    assert.deepEqual(res.body, { closed: 3 });
    const revoked = await request(hub.url, `/rooms/${room}/events?ticket=${ticket}`);
    assert.equal(revoked.status, 401, 'a ticket issued before the disconnect is revoked');
    const backendTicket = await request(hub.url, `/rooms/${room}/ticket`, { method: 'POST', headers: bearer(KEY) });
    assert.equal(backendTicket.status, 403, 'no ticket for the backend key');
    assert.equal((await bobWs.nextType('error')).code, 'disconnected');
    assert.deepEqual(await bobWs.closeFrame(), { code: 4003, reason: 'disconnected' });
    const end = await bobSse.next((e) => e.kind === 'event' && e.event === 'close', 'event: close');
    assert.deepEqual(JSON.parse(end.data), { code: 'disconnected' });
    const poll = await bobPoll;
    assert.equal(poll.status, 403);
    assert.equal(poll.body.error, 'disconnected');
    assert.equal(aliceWs.closeInfo, null);
    assert.equal(aliceWs.closeFrameReceived, false, 'alice stays');
    const state = await request(hub.url, `/rooms/${room}`, { headers: bearer(KEY) });
    assert.deepEqual(state.body.presence, ['alice']);
  });

  test('DELETE erases the room and ends every connection; the room starts again under a new epoch', async () => {
    const room = roomName('erase');
    for (const data of [1, 2, 3]) await request(hub.url, `/rooms/${room}/messages`, json({ data }, bearer(KEY)));
    const reader = bearer(tokenFor('reader'));
    const before = await request(hub.url, `/rooms/${room}/messages?since=0`, { headers: reader });
    const etag = before.headers.get('etag');
    const { client } = await WsClient.welcomed(hub.url, room, `?token=${tokenFor('watcher')}`);
    const sse = await SseClient.connect(hub.url, `/rooms/${room}/events`, reader);

    const res = await request(hub.url, `/rooms/${room}`, { method: 'DELETE', headers: bearer(KEY) });
    assert.equal(res.status, 204);
    assert.deepEqual(await client.closeFrame(), { code: 4004, reason: 'room_deleted' });
    const end = await sse.next((e) => e.kind === 'event' && e.event === 'close', 'event: close');
    assert.deepEqual(JSON.parse(end.data), { code: 'room_deleted' });

    const after = await request(hub.url, `/rooms/${room}/messages?since=0`, { headers: { ...reader, 'If-None-Match': etag } });
    assert.equal(after.status, 200, 'the old ETag does not match');
    assert.deepEqual(after.body.messages, []);
    const next = await request(hub.url, `/rooms/${room}/messages`, json({ data: 'again' }, bearer(KEY)));
    assert.equal(next.body.id, 1, 'ids start again');
    const { client: resumed } = await WsClient.welcomed(hub.url, room, `?token=${tokenFor('watcher')}&since=3`);
    const reset = await resumed.nextType('reset');
    assert.equal(reset.reason, 'cursor_ahead', 'an old cursor learns the room started again');
  });
});

describe('no HUB_API_KEY configured (open mode)', () => {
  const hub = suiteHub({ runtime: 'miniflare', vars: { RATE_PER_SEC: '0' } });

  test('key-only endpoints answer 403; the hub stays open for everything else', async () => {
    const room = roomName('nokey');
    for (const [path, init] of [
      ['/publish', json({ rooms: [room], data: 1 })],
      [`/rooms/${room}/disconnect`, json({ user: 'x' })],
      [`/rooms/${room}`, { method: 'DELETE' }],
    ]) {
      const res = await request(hub.url, path, init);
      assert.equal(res.status, 403, `${path}: ${show(res.body)}`);
    }
    const open = await request(hub.url, `/rooms/${room}/messages`, json({ data: 'hi' }));
    assert.equal(open.status, 201);
  });
});

describe('a key in open mode does not close the hub', () => {
  const hub = suiteHub({ runtime: 'miniflare', vars: { HUB_API_KEY: KEY, RATE_PER_SEC: '0' } });

  test('anonymous requests still work; key-only endpoints need the key (401), and work with it', async () => {
    const room = roomName('openkey');
    assert.equal((await request(hub.url, `/rooms/${room}/messages`, json({ data: 'anon' }))).status, 201);
    assert.equal((await request(hub.url, `/rooms/${room}`, { method: 'DELETE' })).status, 401);
    assert.equal((await request(hub.url, `/rooms/${room}`, { method: 'DELETE', headers: bearer(KEY) })).status, 204);
  });
});
