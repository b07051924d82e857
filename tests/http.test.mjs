// HTTP publishing and polling, checked against docs/PROTOCOL.md ("Publishing
// over HTTP", "Polling", "Room state", "Errors"):
// POST /rooms/{room}/messages, GET /rooms/{room}/messages (ETag, long poll,
// retention resets), GET /rooms/{room}, errors, CORS, settings and restarts.
//
// Run, from the repository root after `npm run build`:
//   node --test --test-timeout=60000 tests/http.test.mjs
// (HUB_BUILD_DIR=<dir> tests a copy of build/ instead.)
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startHub } from '../scripts/launch/hub.mjs';
import { stateDir } from '../scripts/launch/state.mjs';
import { roomName, publish, getJson, waitFor, request, roomState, mustPublish, suiteHub } from './support.mjs';

// ---------------------------------------------------------------- helpers

/** Asserts the error shape of docs/PROTOCOL.md, "Errors": status, JSON `{error, message}`. */
function assertError(res, status, code, what = '') {
  const ctx = `${what} -> ${res.status} ${res.text ?? JSON.stringify(res.body)}`;
  assert.equal(res.status, status, `status for ${ctx}`);
  assert.ok(res.body && typeof res.body === 'object', `JSON error body for ${ctx}`);
  assert.equal(res.body.error, code, `error code for ${ctx}`);
  assert.equal(typeof res.body.message, 'string', `message text for ${ctx}`);
  assert.ok(res.body.message.length > 0, `non-empty message for ${ctx}`);
  assert.match(res.headers.get('content-type') ?? '', /application\/json/, `content-type for ${ctx}`);
}

async function lastId(url, room) {
  return (await roomState(url, room)).last_id;
}

async function poll(url, room, query = '', headers = {}) {
  return getJson(url, `/rooms/${room}/messages${query}`, headers);
}

const ENVELOPE_KEYS = ['data', 'event', 'from', 'id', 'ts'];

// ---------------------------------------------------------------- default hub

describe('HTTP API with default settings', () => {
  // Rate limits off so the bursts below (50 concurrent publishes) test
  // ordering and ids, not the token bucket; every other setting is default.
  const hub = suiteHub({ runtime: 'miniflare', vars: { RATE_PER_SEC: '0', RATE_BURST: '0' } });
  let url;
  before(() => {
    url = hub.url;
  });

  describe('publishing', () => {
    test('a publish returns 201 with id 1, then 2, and a server timestamp', async () => {
      const room = roomName('pub');
      const t0 = Date.now();
      const first = await publish(url, room, { data: 'hello' });
      const second = await publish(url, room, { data: 'again' });
      const t1 = Date.now();
      assert.equal(first.status, 201);
      assert.equal(second.status, 201);
      assert.deepEqual(Object.keys(first.body).sort(), ['id', 'ts']);
      assert.equal(first.body.id, 1);
      assert.equal(second.body.id, 2);
      for (const { body } of [first, second]) {
        assert.ok(Number.isInteger(body.ts), `ts is an integer: ${body.ts}`);
        assert.ok(body.ts >= t0 - 5000 && body.ts <= t1 + 5000, `ts ${body.ts} near now`);
      }
      assert.ok(second.body.ts >= first.body.ts);
    });

    test('polled envelopes carry id, event (default "message"), from null, ts and data', async () => {
      const room = roomName('env');
      const a = await mustPublish(url, room, { data: { text: 'hi' } });
      const b = await mustPublish(url, room, { event: 'chat.typing', data: [1, 2] });
      const res = await poll(url, room, '?since=0');
      assert.equal(res.status, 200);
      assert.equal(res.body.room, room);
      assert.equal(res.body.last_id, 2);
      assert.equal(res.body.messages.length, 2);
      for (const m of res.body.messages) assert.deepEqual(Object.keys(m).sort(), ENVELOPE_KEYS);
      assert.deepEqual(res.body.messages[0], {
        id: 1, event: 'message', from: null, ts: a.ts, data: { text: 'hi' },
      });
      assert.deepEqual(res.body.messages[1], {
        id: 2, event: 'chat.typing', from: null, ts: b.ts, data: [1, 2],
      });
    });

    test('Content-Type with a charset parameter is accepted', async () => {
      const room = roomName('charset');
      const res = await publish(url, room, { data: 1 }, { 'Content-Type': 'application/json; charset=utf-8' });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.equal(res.body.id, 1);
    });

    test('nested objects, unicode, newlines and numbers round-trip exactly', async () => {
      const room = roomName('fidelity');
      const data = {
        text: 'héllo wörld — 日本語 🌍👩‍👩‍👧 \u2028\u2029',
        lines: 'line one\nline two\r\n\ttabbed "quoted" \\ back\\slash </script>',
        control: '\u0000\u001f',
        numbers: [0, 1, -42, 3.14159, 0.1, 1e-7, 1.5e300, 9007199254740991, -2.5],
        flags: [true, false, null],
        nested: { a: { b: { c: [[], {}, [{ d: 'deep' }]] } } },
        empty: '',
      };
      const { id } = await mustPublish(url, room, { event: 'fidelity', data });
      const res = await poll(url, room, '?since=0');
      assert.equal(res.status, 200);
      assert.equal(res.body.messages.length, 1);
      assert.equal(res.body.messages[0].id, id);
      assert.deepEqual(res.body.messages[0].data, data);
    });

    test('any JSON value is valid data: string, number, boolean, null, array', async () => {
      const room = roomName('scalars');
      const values = ['plain', 7, false, null, []];
      for (const data of values) await mustPublish(url, room, { data });
      const res = await poll(url, room, '?since=0');
      assert.deepEqual(res.body.messages.map((m) => m.data), values);
    });

    test('50 concurrent publishes get the distinct ids 1..50 and poll back in order', async () => {
      const room = roomName('concurrent');
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) => publish(url, room, { data: { n: i } })),
      );
      for (const r of results) assert.equal(r.status, 201, JSON.stringify(r.body));
      const ids = results.map((r) => r.body.id).sort((x, y) => x - y);
      assert.deepEqual(ids, Array.from({ length: 50 }, (_, i) => i + 1));

      const res = await poll(url, room, '?since=0&limit=1000');
      assert.equal(res.status, 200);
      assert.equal(res.body.last_id, 50);
      const polled = res.body.messages;
      assert.equal(polled.length, 50);
      assert.deepEqual(polled.map((m) => m.id), Array.from({ length: 50 }, (_, i) => i + 1));
      // Each id holds the data of the publish that got it.
      const byId = new Map(results.map((r, i) => [r.body.id, { n: i, ts: r.body.ts }]));
      for (const m of polled) {
        assert.deepEqual(m.data, { n: byId.get(m.id).n });
        assert.equal(m.ts, byId.get(m.id).ts);
      }
    });
  });

  describe('idempotent publishing', () => {
    test('a retried publish with the same Idempotency-Key returns the first id and stores nothing', async () => {
      const room = roomName('idem');
      const key = `k-${crypto.randomUUID()}`;
      const first = await publish(url, room, { data: 'once' }, { 'Idempotency-Key': key });
      assert.equal(first.status, 201);
      assert.notEqual(first.headers.get('idempotent-replayed'), 'true');
      const again = await publish(url, room, { data: 'once' }, { 'Idempotency-Key': key });
      assert.equal(again.status, 201);
      assert.deepEqual(again.body, first.body);
      assert.equal(again.headers.get('idempotent-replayed'), 'true');

      const res = await poll(url, room, '?since=0');
      assert.equal(res.body.last_id, 1);
      assert.deepEqual(res.body.messages.map((m) => m.id), [1]);

      // A different key is a different message.
      const other = await mustPublish(url, room, { data: 'twice' }, { 'Idempotency-Key': `${key}-2` });
      assert.equal(other.id, 2);
    });

    test('an Idempotency-Key is scoped to its room', async () => {
      const key = `scoped-${crypto.randomUUID()}`;
      const roomA = roomName('idem-a');
      const roomB = roomName('idem-b');
      await mustPublish(url, roomA, { data: 'a' }, { 'Idempotency-Key': key });
      await mustPublish(url, roomA, { data: 'a2' });
      const b = await publish(url, roomB, { data: 'b' }, { 'Idempotency-Key': key });
      assert.equal(b.status, 201);
      assert.equal(b.body.id, 1);
      assert.notEqual(b.headers.get('idempotent-replayed'), 'true');
      const res = await poll(url, roomB, '?since=0');
      assert.deepEqual(res.body.messages.map((m) => m.data), ['b']);
    });

    test('an invalid Idempotency-Key is refused with 400 invalid_param and nothing is stored', async () => {
      const room = roomName('idem-bad');
      await mustPublish(url, room, { data: 'seed' });
      for (const key of ['has space', 'x'.repeat(129)]) {
        const res = await request(url, `/rooms/${room}/messages`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', 'Idempotency-Key': key },
          body: JSON.stringify({ data: 1 }),
        });
        assertError(res, 400, 'invalid_param', `Idempotency-Key ${JSON.stringify(key.slice(0, 20))} (len ${key.length})`);
        assert.equal(await lastId(url, room), 1, 'nothing stored');
      }
    });
  });

  describe('errors', () => {
    test('bad publish bodies get their error code and never store anything', async () => {
      const room = roomName('badbody');
      await mustPublish(url, room, { data: 'seed' });
      const cases = [
        ['not json at all', 400, 'invalid_json'],
        ['{"data":', 400, 'invalid_json'],
        ['', 400, 'invalid_json'],
        ['{}', 400, 'invalid_body'],
        ['{"event":"message"}', 400, 'invalid_body'],
        ['[1,2]', 400, 'invalid_body'],
        ['{"event":"join","data":1}', 400, 'reserved_event'],
        ['{"event":"leave","data":1}', 400, 'reserved_event'],
        ['{"event":"presence","data":1}', 400, 'reserved_event'],
        ['{"event":"reset","data":1}', 400, 'reserved_event'],
        ['{"event":"a b","data":1}', 400, 'invalid_event'],
        [JSON.stringify({ event: 'e'.repeat(65), data: 1 }), 400, 'invalid_event'],
      ];
      for (const [body, status, code] of cases) {
        const res = await request(url, `/rooms/${room}/messages`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body,
        });
        assertError(res, status, code, `POST body ${body.slice(0, 40)}`);
        assert.equal(await lastId(url, room), 1, `nothing stored after ${body.slice(0, 40)}`);
      }
    });

    test('a non-JSON Content-Type is refused with 415 unsupported_media_type', async () => {
      const room = roomName('media');
      await mustPublish(url, room, { data: 'seed' });
      for (const contentType of ['text/plain', 'application/x-www-form-urlencoded']) {
        const res = await request(url, `/rooms/${room}/messages`, {
          method: 'POST',
          headers: { 'Content-Type': contentType },
          body: JSON.stringify({ data: 1 }),
        });
        assertError(res, 415, 'unsupported_media_type', contentType);
        assert.equal(await lastId(url, room), 1);
      }
    });

    test('a message over MAX_MESSAGE_BYTES (65536) is refused with 413 too_large', async () => {
      const room = roomName('big');
      await mustPublish(url, room, { data: 'seed' });
      const res = await request(url, `/rooms/${room}/messages`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ data: 'x'.repeat(70000) }),
      });
      assertError(res, 413, 'too_large', '70 kB body');
      assert.equal(await lastId(url, room), 1);
      // Something comfortably under the limit still goes through.
      const ok = await mustPublish(url, room, { data: 'y'.repeat(60000) });
      assert.equal(ok.id, 2);
    });

    test('invalid room names are refused with 400 invalid_room on every endpoint', async () => {
      const bad = ['a%20b', 'a'.repeat(129), 'a%2Fb', 'caf%C3%A9', 'a!b'];
      for (const room of bad) {
        const label = room.length > 20 ? `${room.slice(0, 10)}…(${room.length})` : room;
        assertError(await request(url, `/rooms/${room}`), 400, 'invalid_room', `GET /rooms/${label}`);
        assertError(await request(url, `/rooms/${room}/messages`), 400, 'invalid_room', `GET /rooms/${label}/messages`);
        assertError(
          await request(url, `/rooms/${room}/messages`, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: '{"data":1}',
          }),
          400, 'invalid_room', `POST /rooms/${label}/messages`,
        );
        assertError(await request(url, `/rooms/${room}/events`), 400, 'invalid_room', `GET /rooms/${label}/events`);
        assertError(await request(url, `/rooms/${room}/ws`), 400, 'invalid_room', `GET /rooms/${label}/ws`);
      }
      // The longest allowed name (128 characters of the allowed set) works.
      const longest = `${roomName('max')}.:_`.padEnd(128, 'z');
      assert.equal(longest.length, 128);
      const ok = await publish(url, longest, { data: 1 });
      assert.equal(ok.status, 201);
      assert.equal(await lastId(url, longest), 1);
    });

    test('unknown routes answer 404 not_found', async () => {
      for (const path of ['/nope', '/rooms/x/nope', '/rooms', '/rooms/x/messages/1']) {
        assertError(await request(url, path), 404, 'not_found', `GET ${path}`);
      }
    });

    test('wrong methods answer 405 method_not_allowed with an Allow header', async () => {
      const room = roomName('method');
      await mustPublish(url, room, { data: 'seed' });
      const del = await request(url, `/rooms/${room}/messages`, { method: 'DELETE' });
      assertError(del, 405, 'method_not_allowed', `DELETE /rooms/${room}/messages`);
      const allowMessages = del.headers.get('allow') ?? '';
      assert.match(allowMessages, /\bGET\b/);
      assert.match(allowMessages, /\bPOST\b/);

      const post = await request(url, `/rooms/${room}`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: '{"data":1}',
      });
      assertError(post, 405, 'method_not_allowed', `POST /rooms/${room}`);
      const allowState = post.headers.get('allow') ?? '';
      assert.match(allowState, /\bGET\b/);
      assert.doesNotMatch(allowState, /\bPOST\b/);

      const put = await request(url, `/rooms/${room}/messages`, {
        method: 'PUT',
        headers: { 'Content-Type': 'application/json' },
        body: '{"data":1}',
      });
      assertError(put, 405, 'method_not_allowed', `PUT /rooms/${room}/messages`);
      assert.ok(put.headers.get('allow'));
      assert.equal(await lastId(url, room), 1, 'nothing stored');
    });

    test('GET /rooms/{room}/ws without an Upgrade header answers 426 upgrade_required', async () => {
      const room = roomName('ws426');
      assertError(await request(url, `/rooms/${room}/ws`), 426, 'upgrade_required', `GET /rooms/${room}/ws`);
    });
  });

  describe('polling', () => {
    let room;
    let published; // [{id, ts}] for ids 1..60

    before(async () => {
      room = roomName('poll');
      published = [];
      for (let i = 1; i <= 60; i += 1) published.push(await mustPublish(url, room, { data: i }));
    });

    test('GET messages returns room, messages, last_id with ETag and Cache-Control: no-cache', async () => {
      const res = await poll(url, room);
      assert.equal(res.status, 200);
      assert.deepEqual(Object.keys(res.body).sort(), ['last_id', 'messages', 'room']);
      assert.equal(res.body.room, room);
      assert.equal(res.body.last_id, 60);
      assert.ok(res.headers.get('etag'), 'ETag header');
      assert.match(res.headers.get('cache-control') ?? '', /no-cache/);
      assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    });

    test('without since: the last 50 messages, oldest first', async () => {
      const res = await poll(url, room);
      assert.deepEqual(res.body.messages.map((m) => m.id), Array.from({ length: 50 }, (_, i) => i + 11));
      assert.deepEqual(res.body.messages.map((m) => m.data), Array.from({ length: 50 }, (_, i) => i + 11));
      assert.deepEqual(res.body.messages.map((m) => m.ts), published.slice(10).map((p) => p.ts));
    });

    test('limit=3 returns the last 3; limit=1000 returns everything', async () => {
      const three = await poll(url, room, '?limit=3');
      assert.equal(three.status, 200);
      assert.deepEqual(three.body.messages.map((m) => m.id), [58, 59, 60]);
      const all = await poll(url, room, '?limit=1000');
      assert.equal(all.status, 200);
      assert.equal(all.body.messages.length, 60);
      assert.equal(all.body.messages[0].id, 1);
    });

    test('since=ID returns only messages after ID', async () => {
      const res = await poll(url, room, '?since=55');
      assert.equal(res.status, 200);
      assert.deepEqual(res.body.messages.map((m) => m.id), [56, 57, 58, 59, 60]);
      assert.equal(res.body.last_id, 60);
      assert.equal('reset' in res.body, false);
      const none = await poll(url, room, '?since=60');
      assert.equal(none.status, 200);
      assert.deepEqual(none.body.messages, []);
      assert.equal(none.body.last_id, 60);
    });

    test('since with limit resumes from the cursor without a gap', async () => {
      const res = await poll(url, room, '?since=55&limit=2');
      assert.equal(res.status, 200);
      assert.deepEqual(res.body.messages.map((m) => m.id), [56, 57]);
    });

    test('bad limit, since or wait values answer 400 invalid_param', async () => {
      for (const q of ['limit=0', 'limit=1001', 'limit=x', 'since=-1', 'since=abc', 'wait=31', 'wait=-1', 'wait=x']) {
        assertError(await poll(url, room, `?${q}`), 400, 'invalid_param', `GET messages?${q}`);
      }
      assert.equal(await lastId(url, room), 60);
    });

    test('If-None-Match with the current ETag answers 304 with an empty body', async () => {
      const first = await poll(url, room);
      const etag = first.headers.get('etag');
      assert.ok(etag);
      const res = await request(url, `/rooms/${room}/messages`, { headers: { 'If-None-Match': etag } });
      assert.equal(res.status, 304);
      assert.equal(res.text, '');
      assert.equal(res.headers.get('etag'), etag);
    });

    test('If-None-Match matches in a list, as a weak validator, and as *', async () => {
      const etag = (await poll(url, room)).headers.get('etag');
      const weak = etag.startsWith('W/') ? etag : `W/${etag}`;
      for (const inm of [`"x", ${etag}`, `${etag}, "y"`, weak, '*']) {
        const res = await request(url, `/rooms/${room}/messages`, { headers: { 'If-None-Match': inm } });
        assert.equal(res.status, 304, `If-None-Match: ${inm}`);
        assert.equal(res.text, '');
      }
    });

    test('a different or garbage ETag answers 200', async () => {
      for (const inm of ['"not-the-etag"', 'garbage', 'W/"nope"']) {
        const res = await poll(url, room, '', { 'If-None-Match': inm });
        assert.equal(res.status, 200, `If-None-Match: ${inm}`);
        assert.equal(res.body.last_id, 60);
      }
    });

    test('the same page asked again is the same until the next message, then holds it', async () => {
      // The room remembers pages it answered under its current ETag
      // (core::page_cache); a message must never be hidden by one.
      const r = roomName('page');
      await mustPublish(url, r, { data: 1 });
      for (const q of ['?since=0', '', '?limit=1']) {
        const first = await poll(url, r, q);
        const again = await poll(url, r, q);
        assert.deepEqual(again.body, first.body, `GET messages${q} twice`);
      }
      await mustPublish(url, r, { data: 2 });
      assert.deepEqual((await poll(url, r, '?since=0')).body.messages.map((m) => m.data), [1, 2]);
      assert.deepEqual((await poll(url, r)).body.messages.map((m) => m.data), [1, 2]);
      assert.deepEqual((await poll(url, r, '?limit=1')).body.messages.map((m) => m.data), [2]);
    });

    test('a publish changes the ETag, so the old one answers 200 again', async () => {
      const r = roomName('etag');
      await mustPublish(url, r, { data: 1 });
      const before = (await poll(url, r)).headers.get('etag');
      assert.equal((await poll(url, r, '', { 'If-None-Match': before })).status, 304);
      await mustPublish(url, r, { data: 2 });
      const res = await poll(url, r, '', { 'If-None-Match': before });
      assert.equal(res.status, 200);
      assert.equal(res.body.last_id, 2);
      const afterTag = res.headers.get('etag');
      assert.ok(afterTag);
      assert.notEqual(afterTag, before);
      assert.equal((await poll(url, r, '', { 'If-None-Match': afterTag })).status, 304);
    });
  });

  describe('long polling', () => {
    test('a long poll is answered at once when a message is published', async () => {
      const room = roomName('lp');
      const seed = await mustPublish(url, room, { data: 'seed' });
      const started = Date.now();
      const held = poll(url, room, `?since=${seed.id}&wait=10`);

      // While held, the room counts the poll.
      await waitFor(async () => {
        const s = await roomState(url, room);
        return s.connections.poll >= 1;
      }, 5000, 'connections.poll >= 1 while a long poll is held');

      const sent = await mustPublish(url, room, { event: 'wake', data: { hello: 'poll' } });
      const res = await held;
      const elapsed = Date.now() - started;
      assert.equal(res.status, 200);
      assert.ok(elapsed < 5000, `answered in ${elapsed} ms, well before the 10 s wait`);
      assert.deepEqual(res.body.messages, [
        { id: sent.id, event: 'wake', from: null, ts: sent.ts, data: { hello: 'poll' } },
      ]);
      assert.equal(res.body.last_id, sent.id);

      // Once answered, the poll no longer counts.
      await waitFor(async () => (await roomState(url, room)).connections.poll === 0, 5000, 'connections.poll back to 0');
    });

    test('a long poll behind the log returns the missed messages immediately', async () => {
      const room = roomName('lp-behind');
      await mustPublish(url, room, { data: 1 });
      await mustPublish(url, room, { data: 2 });
      const started = Date.now();
      const res = await poll(url, room, '?since=1&wait=10');
      const elapsed = Date.now() - started;
      assert.equal(res.status, 200);
      assert.deepEqual(res.body.messages.map((m) => m.id), [2]);
      assert.ok(elapsed < 2000, `answered in ${elapsed} ms`);
    });

    test('a long poll that times out answers 200 with no messages', async () => {
      const room = roomName('lp-timeout');
      await mustPublish(url, room, { data: 1 });
      const started = Date.now();
      const res = await poll(url, room, '?since=1&wait=2');
      const elapsed = Date.now() - started;
      assert.equal(res.status, 200);
      assert.deepEqual(res.body.messages, []);
      assert.equal(res.body.last_id, 1);
      assert.ok(elapsed >= 1900, `held ${elapsed} ms for wait=2`);
      assert.ok(elapsed < 10000, `held ${elapsed} ms for wait=2`);
    });

    test('a long poll with a matching If-None-Match times out with 304', async () => {
      const room = roomName('lp-304');
      await mustPublish(url, room, { data: 1 });
      const etag = (await poll(url, room)).headers.get('etag');
      const started = Date.now();
      const res = await request(url, `/rooms/${room}/messages?since=1&wait=2`, {
        headers: { 'If-None-Match': etag },
      });
      const elapsed = Date.now() - started;
      assert.equal(res.status, 304);
      assert.equal(res.text, '');
      assert.ok(elapsed >= 1900, `held ${elapsed} ms for wait=2`);
      assert.ok(elapsed < 10000, `held ${elapsed} ms for wait=2`);
    });

    test('a long poll with If-None-Match still gets 200 with the message when one is published', async () => {
      const room = roomName('lp-inm-msg');
      await mustPublish(url, room, { data: 1 });
      const etag = (await poll(url, room)).headers.get('etag');
      const started = Date.now();
      const held = request(url, `/rooms/${room}/messages?since=1&wait=10`, { headers: { 'If-None-Match': etag } });
      await waitFor(async () => (await roomState(url, room)).connections.poll >= 1, 5000, 'poll held');
      const sent = await mustPublish(url, room, { data: 2 });
      const res = await held;
      const elapsed = Date.now() - started;
      assert.equal(res.status, 200);
      assert.ok(elapsed < 5000, `answered in ${elapsed} ms`);
      assert.deepEqual(res.body.messages.map((m) => m.id), [sent.id]);
      assert.notEqual(res.headers.get('etag'), etag);
    });
  });

  // The Worker describes each room request in a header of its own
  // (README, "Layout": core/request.rs); an anonymous poll or publish goes
  // to the room as the client sent it, and the room reads that same
  // description from it. A client that sets the header itself must never
  // have it read as the Worker's.
  describe("a client's own X-Hub-Request header", () => {
    const forged = (room, action) => JSON.stringify({
      room,
      action,
      identity: 'Backend',
      addr: null,
      origin: null,
      expires_s: null,
    });

    test('on a publish: stored in the URL\'s room, from nobody, and the named room untouched', async () => {
      const room = roomName('forged-pub');
      const other = roomName('forged-other');
      const header = { 'X-Hub-Request': forged(other, { do: 'publish', idempotency_key: null }) };
      const res = await publish(url, room, { data: 'mine', from: 'root' }, header);
      assert.equal(res.status, 201, JSON.stringify(res.body));
      const page = await poll(url, room);
      assert.deepEqual(page.body.messages.map((m) => [m.data, m.from]), [['mine', null]]);
      assert.equal(await lastId(url, other), 0, 'nothing went to the room the header named');
    });

    test('on a poll: answered as the poll it is, and a "delete" in the header deletes nothing', async () => {
      const room = roomName('forged-poll');
      const sent = await mustPublish(url, room, { data: 'kept' });
      const header = { 'X-Hub-Request': forged(room, { do: 'delete_room' }) };
      const res = await poll(url, room, '?since=0', header);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual(res.body.messages.map((m) => m.id), [sent.id]);
      const etag = res.headers.get('etag');
      const again = await poll(url, room, '', { ...header, 'If-None-Match': etag });
      assert.equal(again.status, 304);
      assert.equal(await lastId(url, room), sent.id, 'the room still has its message');
    });

    test('a header that is not JSON changes nothing either', async () => {
      const room = roomName('forged-junk');
      const res = await publish(url, room, { data: 'x' }, { 'X-Hub-Request': 'GET https://elsewhere/rooms/z/messages' });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.equal((await poll(url, room, '', { 'X-Hub-Request': '{' })).body.last_id, res.body.id);
    });
  });

  describe('room state', () => {
    test('GET /rooms/{room} reports last_id, first_id, connections, presence and open', async () => {
      const room = roomName('state');
      for (let i = 0; i < 3; i += 1) await mustPublish(url, room, { data: i });
      const res = await getJson(url, `/rooms/${room}`);
      assert.equal(res.status, 200);
      // stats and usage: tests/stats.test.mjs.
      const { stats, usage, ...rest } = res.body;
      assert.equal(stats.published, 3);
      assert.equal(usage.requests, 4);
      assert.deepEqual(rest, {
        room,
        last_id: 3,
        first_id: 1,
        connections: { ws: 0, sse: 0, poll: 0 },
        presence: [],
        open: true,
        loads: 1,
        poll_waiters: 0,
        connect_refused: null,
      });
    });

    test('a room nobody published to has last_id 0 and no messages', async () => {
      const room = roomName('empty');
      const state = await roomState(url, room);
      assert.equal(state.room, room);
      assert.equal(state.last_id, 0);
      const res = await poll(url, room);
      assert.equal(res.status, 200);
      assert.deepEqual(res.body.messages, []);
      assert.equal(res.body.last_id, 0);
    });
  });

  describe('CORS with ALLOWED_ORIGINS=*', () => {
    test('a preflight answers 204 with Access-Control-Allow-Origin * and POST allowed', async () => {
      const room = roomName('cors');
      const res = await request(url, `/rooms/${room}/messages`, {
        method: 'OPTIONS',
        headers: {
          Origin: 'https://app.example',
          'Access-Control-Request-Method': 'POST',
          'Access-Control-Request-Headers': 'content-type, idempotency-key',
        },
      });
      assert.equal(res.status, 204);
      assert.equal(res.text, '');
      assert.equal(res.headers.get('access-control-allow-origin'), '*');
      assert.match(res.headers.get('access-control-allow-methods') ?? '', /\bPOST\b/);
      const allowHeaders = (res.headers.get('access-control-allow-headers') ?? '').toLowerCase();
      assert.match(allowHeaders, /content-type/);
      assert.match(allowHeaders, /idempotency-key/);
      assert.equal(await lastId(url, room), 0, 'a preflight stores nothing');
    });

    test('a cross-origin publish and poll carry Access-Control-Allow-Origin *', async () => {
      const room = roomName('cors-pub');
      const pub = await publish(url, room, { data: 1 }, { Origin: 'https://app.example' });
      assert.equal(pub.status, 201);
      assert.equal(pub.headers.get('access-control-allow-origin'), '*');
      const res = await poll(url, room, '', { Origin: 'https://app.example' });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('access-control-allow-origin'), '*');
      assert.match((res.headers.get('access-control-expose-headers') ?? '').toLowerCase(), /etag/);
    });
  });
});

// ---------------------------------------------------------------- retention

describe('history retention (HISTORY_LIMIT=5)', () => {
  let hub;
  let room;
  const sent = [];

  before(async () => {
    hub = await startHub({ runtime: 'miniflare', vars: { HISTORY_LIMIT: '5', RATE_PER_SEC: '0' } });
    room = roomName('retain');
    for (let i = 1; i <= 12; i += 1) sent.push(await mustPublish(hub.url, room, { data: i }));
  });

  after(async () => {
    await hub?.stop();
  });

  test('ids keep counting past the limit', () => {
    assert.deepEqual(sent.map((s) => s.id), Array.from({ length: 12 }, (_, i) => i + 1));
  });

  test('since=0 gets a history_exceeded reset and the 5 kept messages', async () => {
    const res = await poll(hub.url, room, '?since=0');
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.reset, { reason: 'history_exceeded', first_id: 8 });
    assert.deepEqual(res.body.messages.map((m) => m.id), [8, 9, 10, 11, 12]);
    assert.deepEqual(res.body.messages.map((m) => m.data), [8, 9, 10, 11, 12]);
    assert.equal(res.body.last_id, 12);
  });

  test('since=3 (dropped) also gets a history_exceeded reset', async () => {
    const res = await poll(hub.url, room, '?since=3');
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.reset, { reason: 'history_exceeded', first_id: 8 });
    assert.deepEqual(res.body.messages.map((m) => m.id), [8, 9, 10, 11, 12]);
  });

  test('since=7 resumes with 8..12 and no reset', async () => {
    const res = await poll(hub.url, room, '?since=7');
    assert.equal(res.status, 200);
    assert.equal('reset' in res.body, false, JSON.stringify(res.body.reset));
    assert.deepEqual(res.body.messages.map((m) => m.id), [8, 9, 10, 11, 12]);
  });

  test('since=99 (ahead of the log) gets a cursor_ahead reset', async () => {
    const res = await poll(hub.url, room, '?since=99');
    assert.equal(res.status, 200);
    assert.ok(res.body.reset, `reset present: ${JSON.stringify(res.body)}`);
    assert.equal(res.body.reset.reason, 'cursor_ahead');
    assert.equal(res.body.last_id, 12);
  });

  test('without since: only the kept messages', async () => {
    const res = await poll(hub.url, room);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.messages.map((m) => m.id), [8, 9, 10, 11, 12]);
  });

  test('room state shows first_id 8 and last_id 12', async () => {
    const state = await roomState(hub.url, room);
    assert.equal(state.first_id, 8);
    assert.equal(state.last_id, 12);
  });
});

// ---------------------------------------------------------------- bad settings

describe('bad settings', () => {
  const BAD = 'ten-q7zx';
  const hub = suiteHub({ runtime: 'miniflare', vars: { HISTORY_LIMIT: BAD } });

  test('a bad HISTORY_LIMIT makes every room request fail with 500 bad_config without echoing the value', async () => {
    const room = roomName('badcfg');
    const requests = [
      ['POST messages', `/rooms/${room}/messages`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"data":1}' }],
      ['GET messages', `/rooms/${room}/messages`, {}],
      ['GET messages?since=0&wait=1', `/rooms/${room}/messages?since=0&wait=1`, {}],
      ['GET room', `/rooms/${room}`, {}],
      ['GET events', `/rooms/${room}/events`, {}],
      ['GET ws', `/rooms/${room}/ws`, {}],
    ];
    for (const [label, path, init] of requests) {
      const res = await request(hub.url, path, init);
      assertError(res, 500, 'bad_config', label);
      assert.ok(!res.text.includes(BAD), `${label}: body leaks the bad value: ${res.text}`);
      assert.ok(!res.text.includes('q7zx'), `${label}: body leaks the bad value: ${res.text}`);
    }
  });
});

// ---------------------------------------------------------------- CORS allow-list

describe('CORS with ALLOWED_ORIGINS=https://good.example', () => {
  const hub = suiteHub({ runtime: 'miniflare', vars: { ALLOWED_ORIGINS: 'https://good.example' } });

  test('a publish from an allowed origin gets 201 and its origin echoed', async () => {
    const room = roomName('cors-good');
    const res = await publish(hub.url, room, { data: 'ok' }, { Origin: 'https://good.example' });
    assert.equal(res.status, 201);
    assert.equal(res.body.id, 1);
    assert.equal(res.headers.get('access-control-allow-origin'), 'https://good.example');
  });

  test('a publish from another origin gets 403 origin_not_allowed and stores nothing', async () => {
    const room = roomName('cors-evil');
    await mustPublish(hub.url, room, { data: 'seed' }, { Origin: 'https://good.example' });
    const res = await request(hub.url, `/rooms/${room}/messages`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Origin: 'https://evil.example' },
      body: JSON.stringify({ data: 'evil' }),
    });
    assertError(res, 403, 'origin_not_allowed', 'POST from https://evil.example');
    assert.notEqual(res.headers.get('access-control-allow-origin'), 'https://evil.example');
    assert.notEqual(res.headers.get('access-control-allow-origin'), '*');
    const polled = await poll(hub.url, room, '?since=0');
    assert.deepEqual(polled.body.messages.map((m) => m.data), ['seed']);
    assert.equal(polled.body.last_id, 1);
  });

  test('a preflight from the allowed origin echoes it', async () => {
    const res = await request(hub.url, `/rooms/${roomName('cors-pre')}/messages`, {
      method: 'OPTIONS',
      headers: { Origin: 'https://good.example', 'Access-Control-Request-Method': 'POST' },
    });
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('access-control-allow-origin'), 'https://good.example');
    assert.match(res.headers.get('access-control-allow-methods') ?? '', /\bPOST\b/);
  });
});

// ---------------------------------------------------------------- restart

describe('restart with persisted state', () => {
  let state;
  let hub;

  before(() => {
    state = stateDir();
  });

  after(async () => {
    await hub?.stop();
    state?.cleanup();
  });

  test('messages, ids, timestamps and the ETag survive a restart; the next id is 4', async () => {
    const room = roomName('restart');
    hub = await startHub({ runtime: 'miniflare', stateDir: state.dir });
    const sent = [];
    for (let i = 1; i <= 3; i += 1) sent.push(await mustPublish(hub.url, room, { data: `m${i}` }));
    assert.deepEqual(sent.map((s) => s.id), [1, 2, 3]);
    const beforeRes = await poll(hub.url, room, '?since=0');
    const etag = beforeRes.headers.get('etag');
    assert.ok(etag);
    await hub.stop();
    hub = undefined;

    hub = await startHub({ runtime: 'miniflare', stateDir: state.dir });
    // Same state, same validator: still 304.
    const cached = await request(hub.url, `/rooms/${room}/messages`, { headers: { 'If-None-Match': etag } });
    assert.equal(cached.status, 304, `old ETag after restart: ${cached.text}`);

    const afterRes = await poll(hub.url, room, '?since=0');
    assert.equal(afterRes.status, 200);
    assert.deepEqual(afterRes.body.messages, beforeRes.body.messages);
    assert.deepEqual(afterRes.body.messages.map((m) => [m.id, m.ts, m.data]), sent.map((s, i) => [s.id, s.ts, `m${i + 1}`]));
    assert.equal(afterRes.body.last_id, 3);

    const next = await mustPublish(hub.url, room, { data: 'm4' });
    assert.equal(next.id, 4);
    const changed = await poll(hub.url, room, '', { 'If-None-Match': etag });
    assert.equal(changed.status, 200);
    assert.notEqual(changed.headers.get('etag'), etag);
    assert.deepEqual(changed.body.messages.map((m) => m.id), [1, 2, 3, 4]);
  });
});
