// The hub as `npm start` runs it: scripts/dev.sh, i.e. `wrangler dev` with
// its dev proxy in front of the Worker (scripts/launch/wrangler-dev.mjs), state in a
// temporary folder, a free port. Miniflare and bare workerd have no such
// proxy, so this is the only spec that sees what a developer sees.
//
// Issue 12: a POST that the room answered without reading its body (415,
// 413, …) made the runtime log `Uncaught TypeError: Can't read from request
// stream after response has been sent`; the next request through the dev
// proxy got `503 Your worker restarted mid-request` (or stalled), and the
// session's WebSockets and SSE streams were dropped. Here every early error
// of every route is sent with small and 1 MiB bodies, with Content-Length
// and chunked, to a room that has a WebSocket and an SSE stream open; each
// must get its JSON error, and afterwards those same subscribers must get
// the next publish, with no restart and nothing uncaught in wrangler's log.
//
// Two servers: one open (no HUB_SECRET), one with HUB_SECRET and tight
// limits for 401/403/429. Each start runs the [build] step (incremental
// after `npm test` built the Worker).
//
// Run: node --test --test-timeout=120000 tests/devserver.test.mjs
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHmac, randomBytes } from 'node:crypto';
import { startHub } from '../scripts/launch/hub.mjs';
import { DEV_START_MS } from '../scripts/launch/wrangler-dev.mjs';
import {
  roomName, withTimeout, show, readResponse, mustPublish, WsClient, wsUrl, closeWsClients, SseClient,
} from './support.mjs';

// ---------------------------------------------------------------- bodies and requests

/** MAX_MESSAGE_BYTES in wrangler.toml. */
const MAX = 65536;
const MIB = 1024 * 1024;
/** How long one error request may take before the case fails (a stalled proxy). */
const REQUEST_MS = 15_000;

/** `text` padded with spaces (JSON whitespace) to `bytes` bytes. */
const padded = (text, bytes) => Buffer.from(text.padEnd(bytes, ' '));

/**
 * Sends one request with `node:http` on a fresh connection. `body` (a
 * Buffer) goes with Content-Length, or with `chunked` as
 * Transfer-Encoding: chunked in several writes. Resolves to readResponse's
 * { status, text, body, headers } as soon as the answer is read, even if
 * the server answered before taking the whole body (a write error after the
 * answer is then expected and ignored).
 */
function send(url, { method, path, headers = {}, body, chunked = false }) {
  const what = `${method} ${path}${body ? ` (${body.length} bytes${chunked ? ', chunked' : ''})` : ''}`;
  return withTimeout(new Promise((resolve, reject) => {
    const h = { ...headers };
    if (body && chunked) h['Transfer-Encoding'] = 'chunked';
    else if (body) h['Content-Length'] = String(body.length);
    const req = http.request(`${url}${path}`, { method, headers: h, agent: false });
    let answered = false;
    req.on('response', (res) => {
      answered = true;
      readResponse(res).then(resolve);
    });
    req.on('error', (err) => {
      if (!answered) reject(new Error(`${what}: ${err.message}`));
    });
    if (!body) {
      req.end();
    } else if (!chunked) {
      req.end(body);
    } else {
      // Four chunks, each written once the previous one left.
      const size = Math.ceil(body.length / 4);
      const write = (at) => {
        if (answered && at > 0) return req.end();
        if (at >= body.length) return req.end();
        req.write(body.subarray(at, at + size), () => setImmediate(() => write(at + size)));
      };
      write(0);
    }
  }), REQUEST_MS, what);
}

/** The body variants of a request that carries one: small and 1 MiB, with Content-Length and chunked. */
const VARIANTS = [
  { size: 'small', chunked: false },
  { size: 'small', chunked: true },
  { size: '1MiB', chunked: false },
  { size: '1MiB', chunked: true },
];

/** Every response a server gave in this file, to assert none was the dev proxy's 503. */
const answers = [];

/**
 * Sends `c` (method, path, headers, `body(size)` or none, `expect(size)` →
 * [status, code]) and asserts the JSON error of docs/PROTOCOL.md ("Errors") with that status.
 */
async function expectError(url, c, variant) {
  const size = variant?.size ?? 'none';
  const body = c.body ? c.body(size) : undefined;
  const res = await send(url, { method: c.method, path: c.path, headers: c.headers, body, chunked: variant?.chunked });
  const label = `${c.method} ${c.path} [${variant ? `${size}${variant.chunked ? ', chunked' : ', Content-Length'}` : 'no body'}]`;
  answers.push({ label, status: res.status, text: res.text });
  const [status, code] = c.expect(size);
  assert.equal(res.status, status, `${label}: ${res.status} ${show(res.text)}`);
  assert.match(String(res.headers['content-type']), /^application\/json/, `${label}: content-type`);
  assert.equal(res.body?.error, code, `${label}: ${show(res.text)}`);
  assert.equal(typeof res.body?.message, 'string', `${label}: ${show(res.text)}`);
}

/** Runs every case with a body in every variant, and every bodiless case once. */
async function expectErrors(url, cases) {
  for (const c of cases) {
    if (!c.body) {
      await expectError(url, c);
      continue;
    }
    for (const variant of VARIANTS) await expectError(url, c, variant);
  }
}

// ---------------------------------------------------------------- case bodies

const json = { 'Content-Type': 'application/json' };
const text = { 'Content-Type': 'text/plain' };
/** A valid publish body: small, or 1 MiB (too large). */
const publishBody = (size) => padded('{"data":{"text":"hi"}}', size === 'small' ? 64 : MIB);
/** Not JSON at all. */
const notJson = (size) => padded('{not json', size === 'small' ? 64 : MIB);
/** A body just over MAX_MESSAGE_BYTES, or 1 MiB. */
const overLimit = (size) => padded('{"data":"x"}', size === 'small' ? MAX + 1 : MIB);
/** The same status whatever the body. */
const always = (status, code) => () => [status, code];
/** What a JSON publish that passed the checks before the body gets: too large at 1 MiB. */
const unlessTooLarge = (status, code) => (size) => (size === '1MiB' ? [413, 'too_large'] : [status, code]);

/** Errors on every route of an open hub, for `room`. */
function openCases(room) {
  const messages = `/rooms/${room}/messages`;
  return [
    // 415: a publish that is not JSON.
    { method: 'POST', path: messages, headers: text, body: publishBody, expect: always(415, 'unsupported_media_type') },
    // 413: over MAX_MESSAGE_BYTES.
    { method: 'POST', path: messages, headers: json, body: overLimit, expect: always(413, 'too_large') },
    // 400: invalid JSON (read, then refused), bad room name.
    { method: 'POST', path: messages, headers: json, body: notJson, expect: unlessTooLarge(400, 'invalid_json') },
    { method: 'POST', path: '/rooms/bad%20name/messages', headers: json, body: publishBody, expect: always(400, 'invalid_room') },
    // 404: unknown paths.
    { method: 'POST', path: '/nope', headers: json, body: publishBody, expect: always(404, 'not_found') },
    { method: 'POST', path: `/rooms/${room}/nope`, headers: json, body: publishBody, expect: always(404, 'not_found') },
    // 405: every route with a method it does not take.
    { method: 'POST', path: '/', headers: json, body: publishBody, expect: always(405, 'method_not_allowed') },
    { method: 'POST', path: '/client.js', headers: json, body: publishBody, expect: always(405, 'method_not_allowed') },
    { method: 'POST', path: `/rooms/${room}`, headers: json, body: publishBody, expect: always(405, 'method_not_allowed') },
    { method: 'POST', path: `/rooms/${room}/ws`, headers: json, body: publishBody, expect: always(405, 'method_not_allowed') },
    { method: 'POST', path: `/rooms/${room}/events`, headers: json, body: publishBody, expect: always(405, 'method_not_allowed') },
    { method: 'PUT', path: messages, headers: json, body: publishBody, expect: always(405, 'method_not_allowed') },
    { method: 'DELETE', path: messages, headers: json, body: publishBody, expect: always(405, 'method_not_allowed') },
    // GET errors, without a body (as browsers send them) and with one.
    { method: 'GET', path: `${messages}?since=bad`, expect: always(400, 'invalid_param') },
    { method: 'GET', path: `${messages}?since=bad`, headers: json, body: publishBody, expect: always(400, 'invalid_param') },
    { method: 'GET', path: `/rooms/${room}/ws`, expect: always(426, 'upgrade_required') },
    { method: 'GET', path: `/rooms/${room}/ws`, headers: json, body: publishBody, expect: always(426, 'upgrade_required') },
    { method: 'GET', path: '/rooms/bad%20name', expect: always(400, 'invalid_room') },
    { method: 'GET', path: '/nope', expect: always(404, 'not_found') },
  ];
}

// ---------------------------------------------------------------- tokens (HS256, as auth.test.mjs)

const SECRET = `devserver-secret-${randomBytes(16).toString('hex')}`;
const b64json = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** An HS256 token for `sub`, valid ten minutes; `over` replaces claims. */
function token(sub, over = {}, secret = SECRET) {
  const claims = { sub, exp: Math.floor(Date.now() / 1000) + 600, rooms: ['*'], can: ['subscribe', 'publish'], ...over };
  const input = `${b64json({ alg: 'HS256', typ: 'JWT' })}.${b64json(claims)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}
const bearer = (tok) => ({ Authorization: `Bearer ${tok}` });

// ---------------------------------------------------------------- one server

/**
 * Starts a dev server with `vars`, opens a WebSocket and an SSE stream on a
 * fresh room (with `subscriberAuth` as ?token= when set), and returns
 * { server, room, ws, sse, cleanup }.
 */
async function serverWithSubscribers(vars, subscriberAuth) {
  let server;
  try {
    // The state folder is the launcher's: a temporary one, removed at stop().
    server = await startHub({ runtime: 'wrangler-dev', vars });
    const room = roomName('dev');
    const query = subscriberAuth ? `?token=${subscriberAuth}` : '';
    const { client: ws } = await WsClient.welcomedAt(wsUrl(server.url, room, query));
    const sse = await SseClient.connect(server.url, `/rooms/${room}/events${query}`);
    const restartsBefore = server.restarts();
    return {
      server,
      room,
      ws,
      sse,
      restartsBefore,
      async cleanup() {
        sse.close();
        await closeWsClients();
        await server.stop();
      },
    };
  } catch (e) {
    await server?.stop();
    throw e;
  }
}

/**
 * Publishes `marker` (with `headers`) and asserts the WebSocket and the SSE
 * stream opened before the errors both get it, that wrangler did not
 * restart the Worker, and that its log has no uncaught error.
 */
async function assertStillAlive(s, headers = {}) {
  const marker = `after-errors-${randomBytes(4).toString('hex')}`;
  const { id } = await withTimeout(mustPublish(s.server.url, s.room, { data: { marker } }, headers), REQUEST_MS, 'the publish after the errors');
  const ws = await s.ws.next((f) => f.type === 'message' && f.data?.marker === marker, `message ${marker} on the WebSocket`);
  assert.equal(ws.id, id);
  const sse = await s.sse.next((e) => e.json?.data?.marker === marker, `message ${marker} on the SSE stream`);
  assert.equal(Number(sse.id), id);
  assert.equal(s.ws.closeInfo, null, 'the WebSocket opened before the errors is still open');
  assert.equal(s.sse.endReason, null, 'the SSE stream opened before the errors is still open');
  assert.equal(s.server.restarts(), s.restartsBefore, `wrangler did not restart the Worker:\n${s.server.log()}`);
  const log = s.server.log();
  assert.doesNotMatch(log, /Uncaught|restarted mid-request|Can't read from request stream/, `wrangler's log:\n${log}`);
  const proxy503 = answers.filter((a) => a.status === 503);
  assert.deepEqual(proxy503, [], 'no request got the dev proxy\'s 503');
}

// ---------------------------------------------------------------- specs

describe('npm start (wrangler dev), open hub: early errors leave the session alive', () => {
  let s;
  before(async () => {
    s = await serverWithSubscribers({ HUB_SECRET: '' });
  }, { timeout: DEV_START_MS + 30_000 });
  after(async () => {
    await s?.cleanup();
  });

  test('every early error on every route gets its JSON error', async () => {
    await expectErrors(s.server.url, openCases(s.room));
  });

  // A room reads a body only where it expects one (a publish): a poll
  // with a body must not reach it with that body unread (see the header).
  test('a poll that carries a body (no browser sends one) gets its messages', async () => {
    const sent = await mustPublish(s.server.url, s.room, { data: 'before the polls' });
    // The same poll without a body first, twice: the Worker remembers it
    // goes to the room as it came (src/memo.js). A chunked body leaves the
    // head the same (no Content-Length): it must still not reach the room.
    for (let i = 0; i < 2; i++) {
      const res = await send(s.server.url, { method: 'GET', path: `/rooms/${s.room}/messages?since=0`, headers: json });
      answers.push({ label: `GET messages, no body (${i + 1})`, status: res.status, text: res.text });
      assert.equal(res.status, 200, `no body: ${res.status} ${show(res.text)}`);
    }
    for (const variant of VARIANTS) {
      const label = `GET messages with a ${variant.size} body${variant.chunked ? ', chunked' : ''}`;
      const res = await send(s.server.url, {
        method: 'GET', path: `/rooms/${s.room}/messages?since=0`, headers: json, body: publishBody(variant.size), chunked: variant.chunked,
      });
      answers.push({ label, status: res.status, text: res.text });
      assert.equal(res.status, 200, `${label}: ${res.status} ${show(res.text)}`);
      assert.ok(res.body?.messages?.some((m) => m.id === sent.id), `${label}: ${show(res.text)}`);
    }
  });

  test('the WebSocket and the SSE stream opened before the errors get the next publish', async () => {
    await assertStillAlive(s);
  });
});

describe('npm start (wrangler dev), HUB_SECRET: early auth and limit errors leave the session alive', () => {
  let s;
  before(async () => {
    s = await serverWithSubscribers({
      HUB_SECRET: SECRET,
      RATE_PER_SEC: '1',
      RATE_BURST: '1',
      MAX_CONNECTIONS_PER_USER: '2',
      ALLOWED_ORIGINS: 'https://app.example',
    }, token('watcher'));
  }, { timeout: DEV_START_MS + 30_000 });
  after(async () => {
    await s?.cleanup();
  });

  test('401, 403, 413, 415 and 429 get their JSON errors', async () => {
    const messages = `/rooms/${s.room}/messages`;
    const good = bearer(token('publisher'));
    await expectErrors(s.server.url, [
      // 401: no token, a token signed with another secret.
      { method: 'POST', path: messages, headers: json, body: publishBody, expect: always(401, 'unauthorized') },
      { method: 'POST', path: messages, headers: { ...json, ...bearer(token('mallory', {}, `${SECRET}-not`)) }, body: publishBody, expect: always(401, 'unauthorized') },
      { method: 'GET', path: messages, expect: always(401, 'unauthorized') },
      // 403: another room only, no publish capability, an origin not allowed.
      { method: 'POST', path: messages, headers: { ...json, ...bearer(token('bob', { rooms: ['elsewhere'] })) }, body: publishBody, expect: always(403, 'forbidden') },
      { method: 'POST', path: messages, headers: { ...json, ...bearer(token('carol', { can: ['subscribe'] })) }, body: publishBody, expect: always(403, 'forbidden') },
      { method: 'POST', path: messages, headers: { ...json, ...good, Origin: 'https://evil.example' }, body: publishBody, expect: always(403, 'origin_not_allowed') },
      // 415 and 413 with a valid token (the request carries an identity).
      { method: 'POST', path: messages, headers: { ...text, ...good }, body: publishBody, expect: always(415, 'unsupported_media_type') },
      { method: 'POST', path: messages, headers: { ...json, ...good }, body: overLimit, expect: always(413, 'too_large') },
      // 429: the watcher already holds MAX_CONNECTIONS_PER_USER (its WebSocket and SSE stream).
      { method: 'GET', path: `/rooms/${s.room}/events?token=${token('watcher')}`, expect: always(429, 'too_many_connections') },
    ]);
  });

  test('429: a second publish within the rate limit, in every body variant', async () => {
    for (const [i, variant] of VARIANTS.entries()) {
      // A fresh user per variant: one publish spends RATE_BURST=1, the next is over it.
      const user = bearer(token(`rate-${i}`));
      await mustPublish(s.server.url, s.room, { data: { warmup: i } }, user);
      const c = {
        method: 'POST', path: `/rooms/${s.room}/messages`, headers: { ...json, ...user }, body: publishBody, expect: unlessTooLarge(429, 'rate_limited'),
      };
      await expectError(s.server.url, c, variant);
    }
  });

  test('the WebSocket and the SSE stream opened before the errors get the next publish', async () => {
    await assertStillAlive(s, bearer(token('final-publisher')));
  });
});
