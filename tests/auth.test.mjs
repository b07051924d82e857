// Authentication, authorization and abuse limits, checked against
// docs/PROTOCOL.md ("Authentication and origins", "Limits", "Errors"): HS256 tokens from the
// `Authorization: Bearer` header or `?token=` (the header wins), their claims
// (`sub`, `exp`, `nbf`, `rooms`, `can`), 401/403 on every transport (a refused
// WebSocket never upgrades), ALLOWED_ORIGINS, `from` taken from the token,
// internal headers that a client cannot spoof, MAX_CONNECTIONS_PER_USER across
// transports and the per-user HTTP publish rate.
//
// Tokens are minted here with node:crypto, independently of the hub's code.
//
// Run, from the repository root after `npm run build`:
//   node --test --test-timeout=90000 tests/auth.test.mjs
// (HUB_BUILD_DIR=<dir> tests a copy of build/ instead.)
import { describe, test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { roomName, getJson, WAIT_MS, withTimeout, waitFor, request, wsUrl, WsClient, closeWsClients, readRefusal, refusedUpgrade, SseClient, closeSseClients, suiteHub } from './support.mjs';

// ---------------------------------------------------------------- tokens

const SECRET = `test-secret-${randomBytes(12).toString('hex')}`;
const OTHER_SECRET = `test-secret-other-${randomBytes(12).toString('hex')}`;

const BOTH = ['subscribe', 'publish'];

const b64url = (bytes) => Buffer.from(bytes).toString('base64url');
const b64json = (value) => b64url(JSON.stringify(value));
const nowS = () => Math.floor(Date.now() / 1000);

/**
 * Signs `claims` into a JWT. `alg` picks the header's alg and the HMAC
 * (HS256 → sha256, HS512 → sha512, none → empty signature).
 */
function mint(claims, { secret = SECRET, alg = 'HS256', header } = {}) {
  const h = b64json(header ?? { alg, typ: 'JWT' });
  const p = b64json(claims);
  const input = `${h}.${p}`;
  if (alg === 'none') return `${input}.`;
  const hash = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[alg];
  assert.ok(hash, `no HMAC for alg ${alg}`);
  return `${input}.${b64url(createHmac(hash, secret).update(input).digest())}`;
}

/** Claims valid for ten minutes; `over` replaces or adds claims (undefined removes one). */
function claims(over = {}) {
  const base = { sub: 'alice', exp: nowS() + 600, rooms: ['*'], can: BOTH };
  const out = { ...base, ...over };
  for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k];
  return out;
}

const token = (over, opts) => mint(claims(over), opts);

/** A valid token whose payload was swapped for another; the signature is the original's. */
function alteredPayload(room) {
  const good = token({ rooms: [`${room}-not-this`] });
  const [h, , sig] = good.split('.');
  const forged = b64json(claims({ sub: 'root', rooms: ['*'] }));
  return `${h}.${forged}.${sig}`;
}

/** A valid token with the signature's first byte changed. */
function alteredSignature(room) {
  const good = token({ rooms: [room] });
  const [h, p, sig] = good.split('.');
  const bytes = Buffer.from(sig, 'base64url');
  bytes[0] ^= 0xff;
  return `${h}.${p}.${b64url(bytes)}`;
}

// ---------------------------------------------------------------- helpers

/** Like support.mjs's `show`, but a string (a response body) is shown as it is, not JSON-quoted. */
function show(value) {
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return text && text.length > 300 ? `${text.slice(0, 300)}…(${text.length} chars)` : text;
}

/** `path` with `params` (values URL-encoded) appended to its query. */
function withQuery(path, params = {}) {
  const entries = Object.entries(params).filter(([, v]) => v !== undefined);
  if (entries.length === 0) return path;
  const qs = entries.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
  return `${path}${path.includes('?') ? '&' : '?'}${qs}`;
}

/**
 * How a request carries its token(s): `{header?, query?, scheme?}`.
 * Returns the headers and query params to send.
 */
function credentials(auth = {}) {
  const headers = {};
  if (auth.header !== undefined) headers.Authorization = `${auth.scheme ?? 'Bearer'} ${auth.header}`;
  const query = auth.query !== undefined ? { token: auth.query } : {};
  return { headers, query };
}

/** POST /rooms/R/messages with `auth`; `extraHeaders` are sent as given. */
function httpPublish(url, room, payload, auth = {}, extraHeaders = {}) {
  const { headers, query } = credentials(auth);
  return request(url, withQuery(`/rooms/${room}/messages`, query), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers, ...extraHeaders },
    body: typeof payload === 'string' ? payload : JSON.stringify(payload),
  });
}

/** Every secret a response must not echo: the tokens used (and their long parts) and the hub secrets. */
function secretsOf(auth = {}) {
  const out = [SECRET, OTHER_SECRET];
  for (const t of [auth.header, auth.query]) {
    if (!t) continue;
    out.push(t);
    for (const part of t.split('.')) if (part.length >= 24) out.push(part);
  }
  return out;
}

function assertNoLeak(text, auth, what) {
  for (const s of secretsOf(auth)) {
    assert.ok(!String(text).includes(s), `${what}: response leaks a token or secret (${s.slice(0, 12)}…): ${show(text)}`);
  }
}

/** The error shape of docs/PROTOCOL.md, "Errors": status, JSON `{error, message}`, nothing leaked. */
function assertError(res, status, code, what, auth = {}) {
  const ctx = `${what} -> ${res.status} ${show(res.text ?? res.body)}`;
  assert.equal(res.status, status, `status for ${ctx}`);
  assert.ok(res.body && typeof res.body === 'object', `JSON error body for ${ctx}`);
  assert.equal(res.body.error, code, `error code for ${ctx}`);
  assert.equal(typeof res.body.message, 'string', `message text for ${ctx}`);
  assert.ok(res.body.message.length > 0, `non-empty message for ${ctx}`);
  assert.deepEqual(Object.keys(res.body).sort(), ['error', 'message'], `error body keys for ${ctx}`);
  const ct = typeof res.headers?.get === 'function' ? res.headers.get('content-type') : res.headers?.['content-type'];
  assert.match(ct ?? '', /application\/json/, `content-type for ${ctx}`);
  assertNoLeak(res.text ?? JSON.stringify(res.body), auth, ctx);
}

function retryAfterOf(res) {
  return typeof res.headers?.get === 'function' ? res.headers.get('retry-after') : res.headers?.['retry-after'];
}

function assertRetryAfter(res, what) {
  const v = retryAfterOf(res);
  assert.ok(v !== null && v !== undefined, `${what}: 429 without Retry-After`);
  assert.match(String(v), /^\d+$/, `${what}: Retry-After is whole seconds: ${v}`);
  assert.ok(Number(v) >= 1, `${what}: Retry-After >= 1: ${v}`);
}

// ---------------------------------------------------------------- WebSocket requests

/**
 * The WebSocket URL and `ws` options for an upgrade of `room`: `auth` as in
 * `credentials`, extra `query` params, an `origin` and extra `headers`.
 */
function wsRequest(url, room, { auth = {}, query = {}, origin, headers = {} } = {}) {
  const cred = credentials(auth);
  const target = withQuery(wsUrl(url, room), { ...query, ...cred.query });
  const options = { headers: { ...cred.headers, ...headers } };
  if (origin) options.origin = origin;
  return { target, options };
}

/** Opens a socket (options as in `wsRequest`) and waits for its welcome; resolves to { client, welcome }. */
function wsWelcomed(url, room, opts) {
  const { target, options } = wsRequest(url, room, opts);
  return WsClient.welcomedAt(target, options);
}

/**
 * Attempts an upgrade (options as in `wsRequest`) expected to be refused;
 * resolves to { status, text, body, headers }, and fails if the socket opens.
 */
function wsRefused(url, room, opts) {
  const { target, options } = wsRequest(url, room, opts);
  return refusedUpgrade(target, options);
}

// ---------------------------------------------------------------- SSE requests

/**
 * GET /rooms/R/events (`auth` as in `credentials`, extra `query` params and
 * `headers`). Resolves to { status, headers, stream } (an SseClient) on 200,
 * or the refusal { status, text, body, headers } otherwise.
 */
async function openSse(url, room, { auth = {}, query = {}, headers = {} } = {}) {
  const cred = credentials(auth);
  const stream = await SseClient.open(url, withQuery(`/rooms/${room}/events`, { ...query, ...cred.query }), { ...cred.headers, ...headers });
  if (stream.status !== 200) return stream.refusal();
  return { status: 200, headers: stream.headers, stream };
}

// ---------------------------------------------------------------- room helpers

/** A token that may read and write every room, for setup and audits (sub "auditor"). */
const auditorToken = () => token({ sub: 'auditor', rooms: ['*'], can: BOTH });

async function audit(url, room) {
  const res = await getJson(url, `/rooms/${room}/messages?since=0&limit=1000`, { Authorization: `Bearer ${auditorToken()}` });
  assert.equal(res.status, 200, `audit poll of ${room}: ${res.status} ${show(res.body)}`);
  return res.body;
}

async function roomState(url, room) {
  const res = await getJson(url, `/rooms/${room}`, { Authorization: `Bearer ${auditorToken()}` });
  assert.equal(res.status, 200, `GET /rooms/${room}: ${res.status} ${show(res.body)}`);
  return res.body;
}

/** Stores one message as "seeder" so every case starts from a non-empty log. */
async function seed(url, room) {
  const res = await httpPublish(url, room, { event: 'seed', data: 'seed' }, { header: token({ sub: 'seeder', rooms: [room] }) });
  assert.equal(res.status, 201, `seed ${room}: ${res.status} ${show(res.body)}`);
  return res.body.id;
}

// ---------------------------------------------------------------- the table

/**
 * One row per transport. `attempt` makes the request and resolves to a
 * refusal `{status, text, body, headers}` or a success `{ok: true, ...}`
 * that `success` checks.
 */
const ENDPOINTS = [
  {
    name: 'POST /rooms/R/messages',
    publishes: true,
    async attempt(url, room, auth, label) {
      const res = await httpPublish(url, room, { event: 'probe', data: { probe: label } }, auth);
      return res.status === 201 ? { ok: true, res } : res;
    },
    async success(url, room, got, { before, sub }) {
      assert.deepEqual(Object.keys(got.res.body).sort(), ['id', 'ts'], show(got.res.body));
      assert.equal(got.res.body.id, before + 1, 'the next id');
      const log = await audit(url, room);
      assert.equal(log.last_id, before + 1, 'exactly one message stored');
      const stored = log.messages.at(-1);
      assert.equal(stored.id, got.res.body.id);
      assert.equal(stored.from, sub, `from is the token's sub: ${show(stored)}`);
      assert.equal(stored.event, 'probe');
    },
  },
  {
    name: 'GET /rooms/R/messages',
    async attempt(url, room, auth) {
      const { headers, query } = credentials(auth);
      const res = await request(url, withQuery(`/rooms/${room}/messages?since=0`, query), { headers });
      return res.status === 200 ? { ok: true, res } : res;
    },
    async success(url, room, got, { before }) {
      assert.equal(got.res.body.room, room);
      assert.equal(got.res.body.last_id, before);
      assert.deepEqual(got.res.body.messages.map((m) => m.id), [before]);
    },
  },
  {
    name: 'GET /rooms/R',
    async attempt(url, room, auth) {
      const { headers, query } = credentials(auth);
      const res = await request(url, withQuery(`/rooms/${room}`, query), { headers });
      return res.status === 200 ? { ok: true, res } : res;
    },
    async success(url, room, got, { before }) {
      assert.equal(got.res.body.room, room);
      assert.equal(got.res.body.last_id, before);
      assert.equal(got.res.body.open, false, 'a hub with HUB_SECRET reports open: false');
    },
  },
  {
    name: 'GET /rooms/R/events (SSE)',
    async attempt(url, room, auth) {
      const res = await openSse(url, room, { auth, query: { since: 0 } });
      return res.status === 200 ? { ok: true, res } : res;
    },
    async success(url, room, got, { before }) {
      const { stream, headers } = got.res;
      try {
        assert.match(headers['content-type'] ?? '', /^text\/event-stream/);
        await waitFor(async () => stream.raw.length > 0, WAIT_MS, 'the first bytes of the stream');
        assert.match(stream.raw, /^retry:/, 'the stream starts with a retry: line');
        const ev = await stream.next((e) => e.id === String(before), `seeded message id ${before}`);
        assert.equal(ev.json.from, 'seeder');
      } finally {
        stream.close();
      }
    },
  },
  {
    name: 'GET /rooms/R/ws (WebSocket)',
    async attempt(url, room, auth) {
      const { target, options } = wsRequest(url, room, { auth });
      const client = new WsClient(target, options);
      const outcome = await withTimeout(new Promise((resolve) => {
        client.ws.once('open', () => resolve({ ok: true, client }));
        client.ws.once('unexpected-response', (req, res) => {
          readRefusal(req, res).then(resolve);
        });
        client.ws.once('error', (err) => resolve({ status: `error: ${err.message}`, text: '', body: undefined, headers: {} }));
      }), WAIT_MS, `upgrade of /rooms/${room}/ws`);
      return outcome;
    },
    async success(url, room, got, { before, sub }) {
      const { client } = got;
      try {
        const welcome = await client.next((f) => f.type === 'welcome', 'welcome');
        assert.equal(welcome.room, room);
        assert.equal(welcome.last_id, before);
        assert.equal(welcome.you?.user, sub, `welcome.you.user: ${show(welcome)}`);
        assert.ok(welcome.presence.includes(sub), `presence lists ${sub}: ${show(welcome)}`);
      } finally {
        await client.close();
      }
    },
  },
];

const OK = 'ok';
const all = (status, code) => () => ({ status, code });
const unauthorized = all(401, 'unauthorized');
const forbidden = all(403, 'forbidden');
const chatPrefixRoom = () => `chat:${roomName('x')}`;
const chatxRoom = () => `chatx-${roomName('x')}`;

/**
 * The cases: `auth(room)` returns the credentials, `room()` the room name
 * (default a fresh one), `sub` the user a success acts as, `expect(ep)`
 * `OK` or `{status, code}`.
 */
const CASES = [
  { name: 'no token', auth: () => ({}), expect: unauthorized },
  { name: 'garbage token (header)', auth: () => ({ header: 'garbage-not-a-jwt-0123456789abcdef' }), expect: unauthorized },
  { name: 'garbage token (query)', auth: () => ({ query: 'garbage.not.a-jwt-0123456789abcdef' }), expect: unauthorized },
  { name: 'non-Bearer scheme (Basic)', auth: (room) => ({ header: token({ rooms: [room] }), scheme: 'Basic' }), expect: unauthorized },
  { name: 'bad signature: payload altered', auth: (room) => ({ header: alteredPayload(room) }), expect: unauthorized },
  { name: 'bad signature: signature altered', auth: (room) => ({ header: alteredSignature(room) }), expect: unauthorized },
  { name: 'wrong secret', auth: (room) => ({ header: token({ rooms: [room] }, { secret: OTHER_SECRET }) }), expect: unauthorized },
  { name: 'alg none, empty signature', auth: (room) => ({ header: token({ rooms: [room] }, { alg: 'none', header: { alg: 'none', typ: 'JWT' } }) }), expect: unauthorized },
  { name: 'alg HS512 (validly signed with HS512)', auth: (room) => ({ header: token({ rooms: [room] }, { alg: 'HS512' }) }), expect: unauthorized },
  { name: 'expired', auth: (room) => ({ header: token({ rooms: [room], exp: nowS() - 60 }) }), expect: unauthorized },
  { name: 'nbf in the future', auth: (room) => ({ header: token({ rooms: [room], nbf: nowS() + 3600 }) }), expect: unauthorized },
  { name: 'missing exp', auth: (room) => ({ header: token({ rooms: [room], exp: undefined }) }), expect: unauthorized },
  { name: 'empty sub', auth: (room) => ({ header: token({ rooms: [room], sub: '' }) }), expect: unauthorized },
  { name: 'wrong room', auth: (room) => ({ header: token({ rooms: [`${room}-other`, 'lobby'] }) }), expect: forbidden },
  { name: 'no rooms claim', auth: () => ({ header: token({ rooms: undefined }) }), expect: forbidden },
  { name: 'prefix chat:* grants chat:x', room: chatPrefixRoom, auth: () => ({ header: token({ rooms: ['chat:*'] }) }), expect: () => OK },
  { name: 'prefix chat:* does not grant chatx', room: chatxRoom, auth: () => ({ header: token({ rooms: ['chat:*'] }) }), expect: forbidden },
  { name: 'exact room name', auth: (room) => ({ header: token({ rooms: [room] }) }), expect: () => OK },
  { name: 'nbf in the past is fine', auth: (room) => ({ header: token({ rooms: [room], nbf: nowS() - 60 }) }), expect: () => OK },
  {
    name: 'subscribe-only token (no can)',
    auth: (room) => ({ header: token({ rooms: [room], can: undefined }) }),
    expect: (ep) => (ep.publishes ? { status: 403, code: 'forbidden' } : OK),
  },
  {
    name: 'publish-only token (can: ["publish"])',
    auth: (room) => ({ header: token({ rooms: [room], can: ['publish'] }) }),
    expect: (ep) => (ep.publishes ? OK : { status: 403, code: 'forbidden' }),
  },
  { name: 'unknown capability only (can: ["admin"])', auth: (room) => ({ header: token({ rooms: [room], can: ['admin'] }) }), expect: forbidden },
  { name: 'valid token in ?token=', auth: (room) => ({ query: token({ rooms: [room] }) }), expect: () => OK },
  { name: 'valid token in Authorization header', auth: (room) => ({ header: token({ rooms: [room] }) }), expect: () => OK },
  {
    name: 'header wins: valid header, garbage query',
    auth: (room) => ({ header: token({ rooms: [room] }), query: 'garbage-query-token-0123456789' }),
    expect: () => OK,
  },
  {
    name: 'header wins: garbage header, valid query',
    auth: (room) => ({ header: 'garbage-header-token-0123456789', query: token({ rooms: [room] }) }),
    expect: unauthorized,
  },
  {
    name: 'header wins: two valid tokens, the header one acts',
    sub: 'header-user',
    auth: (room) => ({ header: token({ sub: 'header-user', rooms: [room] }), query: token({ sub: 'query-user', rooms: [room] }) }),
    expect: () => OK,
  },
  {
    name: 'header wins: header for another room, query for this one',
    auth: (room) => ({ header: token({ rooms: [`${room}-other`] }), query: token({ rooms: [room] }) }),
    expect: forbidden,
  },
];

// ---------------------------------------------------------------- secured hub

describe('auth on a hub with HUB_SECRET', () => {
  const hub = suiteHub({ runtime: 'miniflare', vars: { HUB_SECRET: SECRET, RATE_PER_SEC: '0' } });
  let url;
  before(() => {
    url = hub.url;
  });

  for (const ep of ENDPOINTS) {
    describe(`table: ${ep.name}`, () => {
      for (const c of CASES) {
        const want = c.expect(ep);
        const label = want === OK ? 'succeeds' : `${want.status} ${want.code}`;
        test(`${c.name} -> ${label}`, async () => {
          const room = (c.room ?? (() => roomName('auth')))();
          const before = await seed(url, room);
          const auth = c.auth(room);
          const got = await ep.attempt(url, room, auth, c.name);
          const what = `${ep.name.replace('/R', `/${room}`)} [${c.name}]`;
          if (want === OK) {
            assert.ok(got.ok, `${what}: expected success, got ${got.status} ${show(got.text)}`);
            await ep.success(url, room, got, { before, sub: c.sub ?? 'alice' });
          } else {
            if (got.ok) {
              if (got.client) await got.client.close();
              if (got.res?.stream) got.res.stream.close();
              assert.fail(`${what}: expected ${want.status} ${want.code}, but the request succeeded (${got.client ? '101 upgrade' : got.res.status})`);
            }
            assertError(got, want.status, want.code, what, auth);
          }
          if (!(want === OK && ep.publishes)) {
            const log = await audit(url, room);
            assert.equal(log.last_id, before, `${what}: nothing stored (last_id ${before} -> ${log.last_id})`);
            assert.deepEqual(log.messages.map((m) => m.from), ['seeder'], `${what}: the log is intact`);
          }
        });
      }
    });
  }

  test('a token is refused on a WebSocket before the upgrade, with no socket in the room', async () => {
    const room = roomName('ws-refused');
    const res = await wsRefused(url, room, { auth: { query: token({ rooms: ['elsewhere'] }) } });
    assertError(res, 403, 'forbidden', 'ws upgrade for another room', {});
    const st = await roomState(url, room);
    assert.equal(st.connections.ws, 0, show(st));
    assert.deepEqual(st.presence, []);
  });

  test('GET /rooms/R reports "open": false when HUB_SECRET is set', async () => {
    const room = roomName('state');
    const st = await roomState(url, room);
    assert.equal(st.open, false, show(st));
  });

  describe('WebSocket publish capability', () => {
    test('a subscribe-only socket opens but its publish gets error forbidden, and nothing is stored', async () => {
      const room = roomName('ws-subonly');
      const before = await seed(url, room);
      const sub = token({ rooms: [room], can: undefined });
      const { client, welcome } = await wsWelcomed(url, room, { auth: { query: sub } });
      assert.equal(welcome.you.user, 'alice');
      const reply = await client.publishFrame({ text: 'nope' }, 'c-1');
      assert.equal(reply.type, 'error', `publish answered ${show(reply)}`);
      assert.equal(reply.code, 'forbidden', show(reply));
      assert.equal(typeof reply.message, 'string');
      assertNoLeak(JSON.stringify(reply), { query: sub }, 'ws error frame');
      // The socket stays open and still works for presence.
      client.send({ type: 'presence' });
      const presence = await client.next((f) => f.type === 'presence', 'presence frame');
      assert.ok(presence.members.includes('alice'), show(presence));
      assert.equal(client.frames.filter((f) => f.type === 'ack').length, 0, client.seen());
      assert.equal(client.frames.filter((f) => f.type === 'message').length, 0, client.seen());
      const log = await audit(url, room);
      assert.equal(log.last_id, before, 'nothing stored');
      await client.close();
    });

    test('spoofed X-Hub-User / X-Hub-Publish on the upgrade change nothing', async () => {
      const room = roomName('ws-spoof');
      const before = await seed(url, room);
      const sub = token({ rooms: [room], can: undefined });
      const { client, welcome } = await wsWelcomed(url, room, {
        auth: { header: sub },
        headers: { 'X-Hub-User': 'mallory', 'X-Hub-Publish': '1' },
      });
      assert.equal(welcome.you.user, 'alice', show(welcome));
      assert.ok(!welcome.presence.includes('mallory'), show(welcome));
      const reply = await client.publishFrame('spoofed', 'c-spoof');
      assert.equal(reply.type, 'error', show(reply));
      assert.equal(reply.code, 'forbidden', show(reply));
      assert.equal((await audit(url, room)).last_id, before, 'nothing stored');
      await client.close();
    });

    test('a publish-capable socket is acked and the message is from its sub', async () => {
      const room = roomName('ws-pub');
      const before = await seed(url, room);
      const { client } = await wsWelcomed(url, room, { auth: { query: token({ rooms: [room] }) } });
      const ack = await client.publishFrame({ text: 'hi' }, 'c-ok');
      assert.equal(ack.type, 'ack', show(ack));
      assert.equal(ack.id, before + 1);
      const msg = await client.next((f) => f.type === 'message' && f.id === ack.id, `message ${ack.id}`);
      assert.equal(msg.from, 'alice');
      const log = await audit(url, room);
      assert.equal(log.last_id, before + 1);
      assert.equal(log.messages.at(-1).from, 'alice');
      await client.close();
    });
  });

  describe('from comes from sub', () => {
    test('HTTP and WebSocket publishes by alice show from "alice" on poll, SSE and WebSocket', async () => {
      const room = roomName('from');
      const alice = token({ rooms: [room] });
      const sse = await openSse(url, room, { auth: { query: alice }, query: { since: 0 } });
      assert.equal(sse.status, 200, show(sse.text));
      const { client, welcome } = await wsWelcomed(url, room, { auth: { query: alice } });
      assert.equal(welcome.you.user, 'alice', show(welcome));
      assert.deepEqual(welcome.presence, ['alice'], show(welcome));

      const viaHttp = await httpPublish(url, room, { data: 'over http' }, { header: alice });
      assert.equal(viaHttp.status, 201, show(viaHttp.text));
      const ack = await client.publishFrame('over ws', 'c-from');
      assert.equal(ack.type, 'ack', show(ack));
      const ids = [viaHttp.body.id, ack.id];

      const log = await audit(url, room);
      assert.deepEqual(log.messages.map((m) => [m.id, m.from]), ids.map((id) => [id, 'alice']));
      for (const id of ids) {
        const frame = await client.next((f) => f.type === 'message' && f.id === id, `ws message ${id}`);
        assert.equal(frame.from, 'alice', show(frame));
        const ev = await sse.stream.next((e) => e.id === String(id), `sse event ${id}`);
        assert.equal(ev.json?.from, 'alice', show(ev));
        assert.equal(ev.json?.id, id);
      }
      sse.stream.close();
      await client.close();
    });

    test('a user\'s body with "from": "mallory" is ignored: the message is from the token\'s sub', async () => {
      const room = roomName('from-body');
      const auth = { header: token({ rooms: [room] }) };
      const res = await httpPublish(url, room, { data: 'x', from: 'mallory' }, auth);
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.deepEqual((await audit(url, room)).messages.map((m) => m.from), ['alice']);
    });

    test('X-Hub-User / X-Hub-Publish / X-Hub-Request from a client: subscribe-only still 403, publisher still "alice"', async () => {
      const room = roomName('spoof');
      const before = await seed(url, room);
      // X-Hub-Request is the Worker's own description header: one naming
      // the backend must not stand for the caller's token either.
      const backendDescription = JSON.stringify({
        room, action: { do: 'publish', idempotency_key: null }, identity: 'Backend', addr: null, origin: null, expires_s: null,
      });
      const spoof = { 'X-Hub-User': 'mallory', 'X-Hub-Publish': '1', 'X-Hub-Request': backendDescription };
      const subOnly = { header: token({ rooms: [room], can: undefined }) };
      const refused = await httpPublish(url, room, { data: 'spoof' }, subOnly, spoof);
      assertError(refused, 403, 'forbidden', 'subscribe-only POST with spoofed internal headers', subOnly);
      assert.equal((await audit(url, room)).last_id, before, 'nothing stored');

      // Also with the token in the query and no Authorization header at all.
      const refusedQ = await httpPublish(url, room, { data: 'spoof' }, { query: subOnly.header }, spoof);
      assertError(refusedQ, 403, 'forbidden', 'subscribe-only ?token= POST with spoofed headers', subOnly);

      const pub = { header: token({ rooms: [room] }) };
      const ok = await httpPublish(url, room, { data: 'real' }, pub, spoof);
      assert.equal(ok.status, 201, show(ok.text));
      const log = await audit(url, room);
      assert.equal(log.last_id, before + 1);
      assert.equal(log.messages.at(-1).from, 'alice', show(log.messages.at(-1)));

      // Without any token the spoofed headers do not authenticate either.
      const none = await httpPublish(url, room, { data: 'anon' }, {}, spoof);
      assertError(none, 401, 'unauthorized', 'POST with only spoofed headers', {});
      assert.equal((await audit(url, room)).last_id, before + 1);
    });
  });
});

// ---------------------------------------------------------------- origins

describe('ALLOWED_ORIGINS on a hub with HUB_SECRET', () => {
  const hub = suiteHub({ runtime: 'miniflare', vars: { HUB_SECRET: SECRET, RATE_PER_SEC: '0', ALLOWED_ORIGINS: 'https://good.example' } });
  let url;
  before(() => {
    url = hub.url;
  });

  for (const evil of ['https://evil.example', 'https://good.example.evil.example', 'null']) {
    test(`WebSocket upgrade from Origin ${evil} -> 403 origin_not_allowed, no 101`, async () => {
      const room = roomName('origin-ws');
      const before = await seed(url, room);
      const auth = { query: token({ rooms: [room] }) };
      const res = await wsRefused(url, room, { auth, origin: evil });
      assertError(res, 403, 'origin_not_allowed', `ws upgrade from ${evil}`, auth);
      const st = await roomState(url, room);
      assert.equal(st.connections.ws, 0, show(st));
      assert.equal((await audit(url, room)).last_id, before);
    });

    test(`POST from Origin ${evil} -> 403 origin_not_allowed, nothing stored`, async () => {
      const room = roomName('origin-post');
      const before = await seed(url, room);
      const auth = { header: token({ rooms: [room] }) };
      const res = await httpPublish(url, room, { data: 'cross-site' }, auth, { Origin: evil });
      assertError(res, 403, 'origin_not_allowed', `POST from ${evil}`, auth);
      assert.equal((await audit(url, room)).last_id, before);
    });
  }

  test('WebSocket upgrade from the allowed Origin succeeds', async () => {
    const room = roomName('origin-ok');
    const before = await seed(url, room);
    const { client, welcome } = await wsWelcomed(url, room, {
      auth: { query: token({ rooms: [room] }) },
      origin: 'https://good.example',
    });
    assert.equal(welcome.you.user, 'alice');
    assert.equal(welcome.last_id, before);
    await client.close();
  });

  test('POST from the allowed Origin succeeds', async () => {
    const room = roomName('origin-ok');
    const before = await seed(url, room);
    const res = await httpPublish(url, room, { data: 'ok' }, { header: token({ rooms: [room] }) }, { Origin: 'https://good.example' });
    assert.equal(res.status, 201, show(res.text));
    const log = await audit(url, room);
    assert.equal(log.last_id, before + 1);
    assert.equal(log.messages.at(-1).from, 'alice');
  });

  test('an allowed Origin does not replace the token: no token -> 401', async () => {
    const room = roomName('origin-notoken');
    const before = await seed(url, room);
    const res = await httpPublish(url, room, { data: 'x' }, {}, { Origin: 'https://good.example' });
    assertError(res, 401, 'unauthorized', 'POST from the good origin without a token');
    const ws = await wsRefused(url, room, { origin: 'https://good.example' });
    assertError(ws, 401, 'unauthorized', 'ws from the good origin without a token');
    assert.equal((await audit(url, room)).last_id, before);
  });
});

// ---------------------------------------------------------------- open hub

describe('a hub without HUB_SECRET', () => {
  const hub = suiteHub({ runtime: 'miniflare', vars: { RATE_PER_SEC: '0' } });
  let url;
  before(() => {
    url = hub.url;
  });

  test('GET /rooms/R reports "open": true and needs no token', async () => {
    const res = await getJson(url, `/rooms/${roomName('open')}`);
    assert.equal(res.status, 200, show(res.body));
    assert.equal(res.body.open, true, show(res.body));
  });

  test('a spoofed X-Hub-User does not become from (stays null)', async () => {
    const room = roomName('open-spoof');
    const res = await httpPublish(url, room, { data: 'x' }, {}, { 'X-Hub-User': 'mallory', 'X-Hub-Publish': '0' });
    assert.equal(res.status, 201, show(res.text));
    const log = await getJson(url, `/rooms/${room}/messages?since=0`);
    assert.equal(log.body.messages.length, 1);
    assert.equal(log.body.messages[0].from, null, show(log.body.messages[0]));
    const { client, welcome } = await wsWelcomed(url, room, { headers: { 'X-Hub-User': 'mallory' } });
    assert.equal(welcome.you.user, null, show(welcome));
    await client.close();
  });
});

// ---------------------------------------------------------------- connection limit

describe('MAX_CONNECTIONS_PER_USER = 2', () => {
  const hub = suiteHub({ runtime: 'miniflare', vars: { HUB_SECRET: SECRET, MAX_CONNECTIONS_PER_USER: '2' } });
  let url;
  before(() => {
    url = hub.url;
  });

  test('a third connection of one user is 429 on every transport; others and later reconnects are fine', async () => {
    const room = roomName('limit');
    const alice = { query: token({ sub: 'alice', rooms: [room] }) };
    const aliceHeader = { header: alice.query };
    const bob = { query: token({ sub: 'bob', rooms: [room] }) };

    const a1 = await wsWelcomed(url, room, { auth: alice });
    const a2 = await wsWelcomed(url, room, { auth: alice });
    assert.equal(a2.welcome.you.user, 'alice');

    const third = await wsRefused(url, room, { auth: alice });
    assertError(third, 429, 'too_many_connections', '3rd WebSocket of alice', alice);
    assertRetryAfter(third, '3rd WebSocket of alice');

    const sse = await openSse(url, room, { auth: alice });
    if (sse.stream) sse.stream.close();
    assertError(sse, 429, 'too_many_connections', 'SSE stream of alice with 2 sockets open', alice);
    assertRetryAfter(sse, 'SSE of alice');

    const { last_id: last } = await roomState(url, room);
    const t0 = Date.now();
    const lp = await getJson(url, `/rooms/${room}/messages?since=${last}&wait=5`, { Authorization: `Bearer ${aliceHeader.header}` });
    const held = Date.now() - t0;
    assertError({ ...lp, text: JSON.stringify(lp.body) }, 429, 'too_many_connections', 'long poll of alice with 2 sockets open', alice);
    assertRetryAfter(lp, 'long poll of alice');
    assert.ok(held < 4000, `the refused long poll answered at once, not after its wait (${held} ms)`);

    // A short (non-held) poll is not a connection.
    const quick = await getJson(url, `/rooms/${room}/messages?since=0`, { Authorization: `Bearer ${aliceHeader.header}` });
    assert.equal(quick.status, 200, show(quick.body));

    // Another user has their own count.
    const b1 = await wsWelcomed(url, room, { auth: bob });
    assert.equal(b1.welcome.you.user, 'bob');
    assert.deepEqual([...b1.welcome.presence].sort(), ['alice', 'bob']);

    // After alice closes one socket, she may connect again.
    await a1.client.close();
    await waitFor(async () => (await roomState(url, room)).connections.ws === 2, 10_000, 'ws count 2 after alice closed one socket');
    const a3 = await wsWelcomed(url, room, { auth: alice });
    assert.equal(a3.welcome.you.user, 'alice');
    const again = await wsRefused(url, room, { auth: alice });
    assertError(again, 429, 'too_many_connections', '3rd WebSocket of alice after reconnect', alice);
    await a3.client.close();
    await waitFor(async () => (await roomState(url, room)).connections.ws === 2, 10_000, 'ws count 2 after alice closed a3');

    // A held long poll counts: 1 socket + 1 held poll = 2, so a socket is refused.
    const { last_id: last2 } = await roomState(url, room);
    const pending = getJson(url, `/rooms/${room}/messages?since=${last2}&wait=5`, { Authorization: `Bearer ${aliceHeader.header}` });
    await waitFor(async () => (await roomState(url, room)).connections.poll === 1, 4000, 'the long poll to be held');
    const whilePolling = await wsRefused(url, room, { auth: alice });
    assertError(whilePolling, 429, 'too_many_connections', 'WebSocket of alice while 1 socket + 1 long poll are held', alice);
    const pub = await httpPublish(url, room, { data: 'release' }, { header: token({ sub: 'bob', rooms: [room] }) });
    assert.equal(pub.status, 201, show(pub.text));
    const released = await pending;
    assert.equal(released.status, 200, show(released.body));
    assert.deepEqual(released.body.messages.map((m) => m.id), [pub.body.id]);
    await waitFor(async () => (await roomState(url, room)).connections.poll === 0, 4000, 'the long poll to end');
    const a4 = await wsWelcomed(url, room, { auth: alice });
    assert.equal(a4.welcome.you.user, 'alice');
  });
});

// ---------------------------------------------------------------- HTTP publish rate

describe('RATE_PER_SEC = 1, RATE_BURST = 3 for HTTP publishes', () => {
  const hub = suiteHub({ runtime: 'miniflare', vars: { HUB_SECRET: SECRET, RATE_PER_SEC: '1', RATE_BURST: '3' } });
  let url;
  before(() => {
    url = hub.url;
  });

  test('8 quick POSTs by alice: exactly 3 x 201, the rest 429 rate_limited; bob has his own bucket', async () => {
    const room = roomName('rate');
    const alice = { header: token({ sub: 'alice', rooms: [room] }) };
    // Warm the room up (a read, not a publish) so the burst is not slowed by the first load.
    await roomState(url, room);
    const t0 = Date.now();
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => httpPublish(url, room, { data: { n: i } }, alice)),
    );
    const elapsed = Date.now() - t0;
    const statuses = results.map((r) => r.status);
    const ok = results.filter((r) => r.status === 201);
    const limited = results.filter((r) => r.status !== 201);
    assert.equal(ok.length, 3, `exactly 3 accepted in ${elapsed} ms: statuses ${statuses}`);
    assert.ok(elapsed < 1000, `the burst took ${elapsed} ms; it must finish under 1 s for this check to be exact`);
    for (const r of limited) {
      assertError(r, 429, 'rate_limited', 'publish over the rate', alice);
      assertRetryAfter(r, 'rate_limited');
    }
    const acked = ok.map((r) => r.body.id).sort((a, b) => a - b);
    const log = await audit(url, room);
    assert.deepEqual(log.messages.map((m) => m.id), acked, 'the poll shows exactly the acknowledged ids');
    assert.deepEqual(log.messages.map((m) => m.from), ['alice', 'alice', 'alice']);
    assert.equal(log.last_id, acked.at(-1));

    const bob = await httpPublish(url, room, { data: 'bob' }, { header: token({ sub: 'bob', rooms: [room] }) });
    assert.equal(bob.status, 201, `bob's own bucket: ${bob.status} ${show(bob.text)}`);
  });
});
