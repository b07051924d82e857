// The Worker's poll cache (`POLL_CACHE_MS`, README "Settings"), driven
// through the real Worker: a repeat conditional poll is answered `304` by
// the Worker from its memory of the room's ETag, without the hop to the
// room; long polls and polls without `If-None-Match` always reach the
// room; a publish through the Worker makes the next poll fresh; auth is
// checked before the cache answers.
//
// How a test sees that the room was not asked: a message published over a
// WebSocket goes to the room without passing through the Worker, so the
// room's ETag moves while the Worker's memory does not. Within the bound
// the Worker still answers `304` for the old ETag, which the room itself
// would never do.
//
// Run, from the repository root after `npm run build`:
//   node --test --test-timeout=120000 tests/pollcache.test.mjs
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { roomName, getJson, request, mustPublish, waitFor, WsClient, suiteHub, WAIT_MS } from './support.mjs';

const ORIGIN = 'https://app.example';

async function poll(url, room, query = '', headers = {}) {
  return getJson(url, `/rooms/${room}/messages${query}`, headers);
}

/** The headers of a response except `date`, as sorted [name, value] pairs. */
function headersOf(res) {
  return [...res.headers.entries()].filter(([name]) => name !== 'date').sort(([a], [b]) => a.localeCompare(b));
}

/** Publishes `data` over a WebSocket (the room directly, not through the Worker's HTTP path); returns the stored id. */
async function publishAround(url, room, data) {
  const ws = await WsClient.open(url, room);
  const ack = await ws.publish(data, { cid: 'around' });
  await ws.close();
  return ack.id;
}

/** A room with one message, polled once so the Worker remembers its ETag; returns { room, etag }. */
async function polledRoom(url, prefix) {
  const room = roomName(prefix);
  await mustPublish(url, room, { data: 1 });
  const first = await poll(url, room);
  assert.equal(first.status, 200);
  const etag = first.headers.get('etag');
  assert.ok(etag, 'the poll carries an ETag');
  return { room, etag };
}

describe('POLL_CACHE_MS=60000 (open hub)', () => {
  const hub = suiteHub({ runtime: 'workerd', vars: { RATE_PER_SEC: '0', POLL_CACHE_MS: '60000' } });

  test('a repeat conditional poll gets its 304 from the Worker, with the headers the room sends', async () => {
    const { room, etag } = await polledRoom(hub.url, 'pc-hit');
    // The room's own 304: a long poll always reaches the room, and with
    // nothing new it answers 304 at its deadline.
    const fromRoom = await request(hub.url, `/rooms/${room}/messages?wait=1`, {
      headers: { 'If-None-Match': etag, Origin: ORIGIN },
    });
    assert.equal(fromRoom.status, 304);
    const id = await publishAround(hub.url, room, 2);
    assert.equal(id, 2);
    // The room's ETag moved on; the Worker, within its bound, still
    // answers for the one it remembers: proof that the room was not asked.
    const fromWorker = await request(hub.url, `/rooms/${room}/messages`, {
      headers: { 'If-None-Match': etag, Origin: ORIGIN },
    });
    assert.equal(fromWorker.status, 304);
    assert.equal(fromWorker.text, '');
    assert.deepEqual(headersOf(fromWorker), headersOf(fromRoom));
    assert.equal(fromWorker.headers.get('etag'), etag);
    assert.equal(fromWorker.headers.get('access-control-allow-origin'), '*');
    assert.match(fromWorker.headers.get('cache-control') ?? '', /no-cache/);
  });

  test('a poll without If-None-Match always reaches the room, and what it learns replaces the old ETag', async () => {
    const { room, etag } = await polledRoom(hub.url, 'pc-uncond');
    await publishAround(hub.url, room, 2);
    const res = await poll(hub.url, room, '?since=1');
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.messages.map((m) => m.data), [2]);
    const fresh = res.headers.get('etag');
    assert.notEqual(fresh, etag);
    const again = await poll(hub.url, room, '', { 'If-None-Match': etag });
    assert.equal(again.status, 200, 'the old ETag no longer matches what the Worker knows');
    assert.equal(again.body.last_id, 2);
    assert.equal((await request(hub.url, `/rooms/${room}/messages`, { headers: { 'If-None-Match': fresh } })).status, 304);
  });

  test('a long poll always reaches the room', async () => {
    const { room, etag } = await polledRoom(hub.url, 'pc-long');
    await publishAround(hub.url, room, 2);
    const res = await poll(hub.url, room, '?since=1&wait=5', { 'If-None-Match': etag });
    assert.equal(res.status, 200, 'the room sees its ETag moved and answers with the message');
    assert.deepEqual(res.body.messages.map((m) => m.data), [2]);
  });

  test('a publish through the Worker makes the next conditional poll fresh', async () => {
    const { room, etag } = await polledRoom(hub.url, 'pc-publish');
    assert.equal((await request(hub.url, `/rooms/${room}/messages`, { headers: { 'If-None-Match': etag } })).status, 304);
    const sent = await mustPublish(hub.url, room, { data: 2 });
    const res = await poll(hub.url, room, '', { 'If-None-Match': etag });
    assert.equal(res.status, 200);
    assert.equal(res.body.last_id, sent.id);
  });

  test('a cached room never answers for another room', async () => {
    const { etag } = await polledRoom(hub.url, 'pc-one');
    const other = roomName('pc-other');
    await mustPublish(hub.url, other, { data: 1 });
    await publishAround(hub.url, other, 2);
    const res = await poll(hub.url, other, '', { 'If-None-Match': etag });
    assert.equal(res.status, 200);
    assert.equal(res.body.last_id, 2);
  });
});

describe('POLL_CACHE_MS=300: the Worker answers for its bound only', () => {
  const hub = suiteHub({ runtime: 'workerd', vars: { RATE_PER_SEC: '0', POLL_CACHE_MS: '300' } });

  test('once the bound has passed, a conditional poll reaches the room again', async () => {
    const { room, etag } = await polledRoom(hub.url, 'pc-expire');
    await publishAround(hub.url, room, 2);
    await waitFor(
      async () => (await poll(hub.url, room, '', { 'If-None-Match': etag })).status === 200,
      WAIT_MS,
      'a 200 with the message published around the Worker',
    );
  });
});

describe('POLL_CACHE_MS=60000 with HUB_SECRET: auth comes first', () => {
  const SECRET = `test-secret-${randomBytes(16).toString('hex')}`;
  const b64json = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const mint = (claims) => {
    const input = `${b64json({ alg: 'HS256', typ: 'JWT' })}.${b64json(claims)}`;
    return `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
  };
  const tokenFor = (rooms) => mint({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + 600, rooms, can: ['subscribe', 'publish'] });
  const hub = suiteHub({ runtime: 'workerd', vars: { RATE_PER_SEC: '0', POLL_CACHE_MS: '60000', HUB_SECRET: SECRET } });

  test('a remembered ETag is no answer to a caller without a token or a grant for the room', async () => {
    const room = roomName('pc-auth');
    const auth = { Authorization: `Bearer ${tokenFor([room])}` };
    await mustPublish(hub.url, room, { data: 1 }, auth);
    const etag = (await poll(hub.url, room, '', auth)).headers.get('etag');
    assert.ok(etag);
    assert.equal((await request(hub.url, `/rooms/${room}/messages`, { headers: { ...auth, 'If-None-Match': etag } })).status, 304);
    const anonymous = await poll(hub.url, room, '', { 'If-None-Match': etag });
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.body.error, 'unauthorized');
    const elsewhere = await poll(hub.url, room, '', { 'If-None-Match': etag, Authorization: `Bearer ${tokenFor(['another-room'])}` });
    assert.equal(elsewhere.status, 403);
    assert.equal(typeof elsewhere.body.error, 'string');
  });
});
