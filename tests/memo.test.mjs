// The entry module's memos (src/memo.js, README "How a request is
// handled"), driven through the real Worker under workerd: a repeat of a
// request the crate already decided is handled without entering
// WebAssembly, and is answered exactly as the crate would answer it.
//
// What a user would check: a repeat conditional poll gets the room's own
// `304` (its headers, its CORS answer for that origin); the first poll
// after anything that moves the room's ETag (a publish over HTTP, one over
// a WebSocket, which never passes the Worker, `DELETE`) gets the new
// state, never a remembered `304`; every request answered from the memo
// is counted in the room's usage; a repeated publish is stored each time
// and a body the room refuses is refused each time.
//
// Run, from the repository root after `npm run build`:
//   node --test --test-timeout=120000 tests/memo.test.mjs
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { roomName, getJson, request, mustPublish, roomState, waitFor, WsClient, suiteHub, show, WAIT_MS } from './support.mjs';

const KEY = 'memo-backend-key-0123456789abcdef-0123456789';
const A = 'https://a.example';
const B = 'https://b.example';

/** The headers of a response except `date`, as sorted [name, value] pairs. */
function headersOf(res) {
  return [...res.headers.entries()].filter(([name]) => name !== 'date').sort(([x], [y]) => x.localeCompare(y));
}

/** A conditional poll of `room` with `etag` (and `headers`). */
function conditional(url, room, etag, headers = {}, query = '?since=0') {
  return request(url, `/rooms/${room}/messages${query}`, { headers: { 'If-None-Match': etag, ...headers } });
}

/** Polls `room` from `since`; returns { etag, ids }. */
async function current(url, room, since = 0, headers = {}) {
  const res = await getJson(url, `/rooms/${room}/messages?since=${since}`, headers);
  assert.equal(res.status, 200, show(res.body));
  return { etag: res.headers.get('etag'), ids: res.body.messages.map((m) => m.id) };
}

/** Publishes `data` over a WebSocket: straight to the room, not through the Worker's HTTP path. */
async function publishOverWebSocket(url, room, data) {
  const ws = await WsClient.open(url, room);
  const ack = await ws.publish(data, { cid: `memo-${data}` });
  await ws.close();
  return ack.id;
}

/** The room's usage counters. */
async function usage(url, room) {
  const res = await getJson(url, `/rooms/${room}`);
  assert.equal(res.status, 200, show(res.body));
  return res.body.usage;
}

describe('remembered 304s and forwards (open hub, workerd)', () => {
  const hub = suiteHub({
    runtime: 'workerd',
    vars: { RATE_PER_SEC: '0', HUB_API_KEY: KEY, ALLOWED_ORIGINS: `${A},${B}` },
  });

  test('a repeat conditional poll gets the room\'s own 304, with the CORS answer of its origin', async () => {
    const room = roomName('memo-304');
    await mustPublish(hub.url, room, { data: 1 });
    const { etag } = await current(hub.url, room);
    const fromRoom = await conditional(hub.url, room, etag, { Origin: A });
    assert.equal(fromRoom.status, 304);
    for (let i = 0; i < 5; i++) {
      const again = await conditional(hub.url, room, etag, { Origin: A });
      assert.equal(again.status, 304);
      assert.equal(again.text, '');
      assert.deepEqual(headersOf(again), headersOf(fromRoom));
    }
    assert.equal(fromRoom.headers.get('access-control-allow-origin'), A);
    // Another origin is another request: its own answer, remembered apart.
    for (let i = 0; i < 3; i++) {
      const other = await conditional(hub.url, room, etag, { Origin: B });
      assert.equal(other.status, 304);
      assert.equal(other.headers.get('access-control-allow-origin'), B);
      assert.equal(other.headers.get('etag'), etag);
    }
    // An origin not allowed is refused, however often the poll was answered.
    const refused = await conditional(hub.url, room, etag, { Origin: 'https://evil.example' });
    assert.equal(refused.status, 403);
  });

  test('after a publish over a WebSocket (the Worker never sees it), the same poll gets the new message', async () => {
    const room = roomName('memo-ws');
    await mustPublish(hub.url, room, { data: 1 });
    const { etag } = await current(hub.url, room);
    for (let i = 0; i < 3; i++) assert.equal((await conditional(hub.url, room, etag)).status, 304);
    const id = await publishOverWebSocket(hub.url, room, 2);
    assert.equal(id, 2);
    const after = await conditional(hub.url, room, etag);
    assert.equal(after.status, 200, 'a remembered 304 would hide message 2');
    assert.deepEqual(after.body.messages.map((m) => m.id), [1, 2]);
    assert.notEqual(after.headers.get('etag'), etag);
  });

  test('after a publish over HTTP, with or without the backend key, the same poll gets the new message', async () => {
    const room = roomName('memo-http');
    await mustPublish(hub.url, room, { data: 1 });
    let { etag } = await current(hub.url, room);
    const publishers = [{}, { Authorization: `Bearer ${KEY}` }];
    for (const [n, headers] of publishers.entries()) {
      for (let i = 0; i < 3; i++) assert.equal((await conditional(hub.url, room, etag)).status, 304);
      await mustPublish(hub.url, room, { data: n + 2 }, headers);
      const after = await conditional(hub.url, room, etag);
      assert.equal(after.status, 200, `after publish ${n + 2}: ${after.status}`);
      assert.equal(after.body.messages.at(-1).id, n + 2);
      etag = after.headers.get('etag');
    }
  });

  test('after DELETE, an old ETag gets the new epoch\'s state, not a 304', async () => {
    const room = roomName('memo-delete');
    await mustPublish(hub.url, room, { data: 1 });
    const { etag } = await current(hub.url, room);
    for (let i = 0; i < 3; i++) assert.equal((await conditional(hub.url, room, etag)).status, 304);
    const deleted = await request(hub.url, `/rooms/${room}`, { method: 'DELETE', headers: { Authorization: `Bearer ${KEY}` } });
    assert.equal(deleted.status, 204);
    const after = await conditional(hub.url, room, etag);
    assert.equal(after.status, 200, 'an old ETag never matches after DELETE');
    assert.notEqual(after.headers.get('etag'), etag);
  });

  test('every request answered from the memo is counted in the room\'s usage', async () => {
    const room = roomName('memo-count');
    await mustPublish(hub.url, room, { data: 1 });
    const { etag } = await current(hub.url, room);
    const before = (await usage(hub.url, room)).requests;
    // More than the memo answers between two of the room's events (256).
    const polls = 300;
    for (let i = 0; i < polls; i++) assert.equal((await conditional(hub.url, room, etag)).status, 304);
    const after = (await usage(hub.url, room)).requests;
    assert.equal(after, before + polls + 1, 'every poll, and this read of the state');
  });

  test('a repeated publish is stored each time; a body the room refuses is refused each time', async () => {
    const room = roomName('memo-publish');
    const body = '{"data":"x"}';
    const send = (text) => request(hub.url, `/rooms/${room}/messages`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: text,
    });
    const ids = [];
    for (let i = 0; i < 4; i++) {
      const res = await send(body);
      assert.equal(res.status, 201, show(res.text));
      ids.push(res.body.id);
    }
    assert.deepEqual(ids, [1, 2, 3, 4]);
    // The same head (method, URL, type, length) with a body that is not JSON.
    for (let i = 0; i < 2; i++) {
      const bad = await send('{"data":"x"');
      assert.equal(bad.status, 400, show(bad.text));
      assert.equal(bad.body.error, 'invalid_json');
    }
    assert.deepEqual((await current(hub.url, room)).ids, [1, 2, 3, 4]);
  });

  test('a long poll is held every time, never answered from the memo', async () => {
    const room = roomName('memo-long');
    await mustPublish(hub.url, room, { data: 1 });
    const { etag } = await current(hub.url, room);
    assert.equal((await conditional(hub.url, room, etag)).status, 304);
    const held = conditional(hub.url, room, etag, {}, '?since=1&wait=5');
    // Published once the poll is held: it answers with the message.
    await waitFor(async () => (await roomState(hub.url, room)).connections.poll === 1, WAIT_MS, 'the long poll held');
    await mustPublish(hub.url, room, { data: 2 });
    const res = await held;
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.messages.map((m) => m.id), [2]);
  });
});
