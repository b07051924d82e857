// Tokens over time and tokens from an identity provider (docs/PROTOCOL.md,
// "Tokens over time"), against the built Worker:
// - live connections end with their token: a WebSocket closes with 4001
//   token_expired, an SSE stream ends with `event: close`, a held poll gets
//   401 token_expired, at exp + TOKEN_LEEWAY_SECS, also after the room
//   hibernated (its alarm is the clock; bare workerd, which hibernates);
// - HUB_SECRET_PREVIOUS verifies during a rotation, a random secret does not;
//   TOKEN_ISSUER / TOKEN_AUDIENCE and the grant claim names;
// - RS256 and ES256 with keys from an inline JWKS and from a JWKS_URL served
//   by a loopback server (keys made here with node:crypto), a rotated kid
//   picked up, unknown kids and every alg/key confusion refused.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHmac, generateKeyPairSync, sign } from 'node:crypto';
import { suiteHub, roomName, WsClient, SseClient, request, withTimeout, show, wsUrl } from './support.mjs';

const b64url = (x) => Buffer.from(x).toString('base64url');
const nowS = () => Math.floor(Date.now() / 1000);

/** A compact JWS over `header` and `claims`, signed by `signer(signingInput)`. */
function jws(header, claims, signer) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${b64url(signer(input))}`;
}
const hs256 = (secret) => (input) => createHmac('sha256', secret).update(input).digest();
const rs256 = (privateKey) => (input) => sign('sha256', Buffer.from(input), privateKey);
const es256 = (privateKey) => (input) => sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });

const claimsFor = (sub, extra = {}) => ({ sub, exp: nowS() + 600, rooms: ['*'], can: ['subscribe', 'publish'], ...extra });
const bearer = (token) => ({ Authorization: `Bearer ${token}` });

/** Key pairs with their public JWK (kid and alg set). */
function rsaKey(kid) {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { kid, privateKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' } };
}
function ecKey(kid) {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { kid, privateKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256' } };
}

async function publishWith(url, room, token, data = 'hi') {
  return request(url, `/rooms/${room}/messages`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...bearer(token) },
    body: JSON.stringify({ data }),
  });
}

/**
 * How a socket learns its token expired: the `error token_expired` frame
 * (with the time it came), then the close frame. The room sends both at the
 * deadline. Local workerd ends the TCP connection of a close the room
 * starts outside that socket's own event only once the room is idle (see
 * the README's known limits), so a busy room is checked by the close frame
 * itself (WsClient.closeFrame), an idle one by the connection's end.
 */
async function expiryOf(client, ms, { untilTcpClose = false } = {}) {
  const told = await client.next((f) => f.type === 'error' && f.code === 'token_expired', 'error token_expired', ms);
  const at = Date.now();
  if (untilTcpClose) {
    const info = await withTimeout(client.closed, 20_000, `the close of ${client.url}`);
    return { told, at, ...info };
  }
  return { told, at, ...(await client.closeFrame(5000)) };
}

const SECRET = 'tokens-secret-0123456789abcdef-0123456789abcdef';
const PREVIOUS = 'tokens-previous-0123456789abcdef-0123456789';

// ================================================================ expiry

describe('live connections end with their token (bare workerd, TOKEN_LEEWAY_SECS=2)', () => {
  const hub = suiteHub({ runtime: 'workerd', vars: { HUB_SECRET: SECRET, TOKEN_LEEWAY_SECS: '2', RATE_PER_SEC: '0' } });

  test('at exp + leeway: the WebSocket closes 4001 token_expired, the SSE stream ends with event: close, a held poll gets 401; a longer token stays', async () => {
    const room = roomName('expiry');
    const exp = nowS() + 2;
    const short = jws({ alg: 'HS256' }, claimsFor('shorty', { exp }), hs256(SECRET));
    const long = jws({ alg: 'HS256' }, claimsFor('longer'), hs256(SECRET));
    // A room in use (one never published to is never left idle by workerd).
    assert.equal((await publishWith(hub.url, room, long)).status, 201);
    const { client: ws } = await WsClient.welcomed(hub.url, room, `?token=${short}`);
    const { client: stays } = await WsClient.welcomed(hub.url, room, `?token=${long}`);
    const sse = await SseClient.connect(hub.url, `/rooms/${room}/events`, bearer(short));
    const held = request(hub.url, `/rooms/${room}/messages?since=1&wait=25`, { headers: bearer(short) });

    const closed = await expiryOf(ws, 15_000);
    const deadlineMs = (exp + 2) * 1000;
    assert.ok(closed.at >= deadlineMs, `told ${deadlineMs - closed.at} ms before exp + leeway`);
    assert.ok(closed.at <= deadlineMs + 5000, `told ${closed.at - deadlineMs} ms after exp + leeway`);
    assert.equal(closed.code, 4001, ws.seen());
    assert.equal(closed.reason, 'token_expired');

    const end = await sse.next((e) => e.kind === 'event' && e.event === 'close', 'event: close', 5000);
    assert.deepEqual(JSON.parse(end.data), { code: 'token_expired' });
    assert.equal(end.id, undefined, 'the close signal carries no id');
    await withTimeout(sse.ended, 5000, 'the end of the SSE stream');

    const poll = await held;
    assert.equal(poll.status, 401, show(poll.body));
    assert.equal(poll.body.error, 'token_expired');

    assert.equal(stays.closeInfo, null, 'a connection with a longer token stays open');
    assert.equal(stays.closeFrameReceived, false);
    const state = await request(hub.url, `/rooms/${room}`, { headers: bearer(long) });
    assert.deepEqual(state.body.connections, { ws: 1, sse: 0, poll: 0 }, show(state.body));
    assert.deepEqual(state.body.presence, ['longer']);
  });

  test('a held poll alone in its room is answered 401 token_expired at its deadline, not at its wait', async () => {
    const room = roomName('poll-expiry');
    const exp = nowS() + 1;
    const token = jws({ alg: 'HS256' }, claimsFor('poller', { exp }), hs256(SECRET));
    const started = Date.now();
    const res = await request(hub.url, `/rooms/${room}/messages?since=0&wait=25`, { headers: bearer(token) });
    assert.equal(res.status, 401, show(res.body));
    assert.equal(res.body.error, 'token_expired');
    const deadlineMs = (exp + 2) * 1000;
    assert.ok(Date.now() >= deadlineMs && Date.now() <= deadlineMs + 5000, `answered ${Date.now() - deadlineMs} ms after the deadline (${Date.now() - started} ms held)`);
  });

  test('a token past exp but within the leeway still connects; past the leeway it is refused', async () => {
    const room = roomName('leeway');
    const within = jws({ alg: 'HS256' }, claimsFor('late', { exp: nowS() - 1 }), hs256(SECRET));
    const past = jws({ alg: 'HS256' }, claimsFor('later', { exp: nowS() - 5 }), hs256(SECRET));
    assert.equal((await publishWith(hub.url, room, within)).status, 201);
    const refused = await publishWith(hub.url, room, past);
    assert.equal(refused.status, 401);
    assert.equal(refused.body.error, 'unauthorized');
  });
});

describe('expiry while the room hibernates (bare workerd, TOKEN_LEEWAY_SECS=0)', () => {
  const hub = suiteHub({ runtime: 'workerd', vars: { HUB_SECRET: SECRET, TOKEN_LEEWAY_SECS: '0', RATE_PER_SEC: '0' } });

  test('an idle room hibernates; its alarm wakes it at exp and the socket closes 4001', { timeout: 90_000 }, async () => {
    const room = roomName('hib-expiry');
    const exp = nowS() + 25;
    const token = jws({ alg: 'HS256' }, claimsFor('sleeper', { exp }), hs256(SECRET));
    const fresh = jws({ alg: 'HS256' }, claimsFor('reader'), hs256(SECRET));
    // A room in use: workerd hibernates it once idle (a room never
    // published to it keeps awake).
    assert.equal((await publishWith(hub.url, room, fresh)).status, 201);
    const { client } = await WsClient.welcomed(hub.url, room, `?token=${token}`);
    const closed = await expiryOf(client, 45_000, { untilTcpClose: true });
    assert.ok(closed.at >= exp * 1000 && closed.at <= exp * 1000 + 5000, `told ${closed.at - exp * 1000} ms after exp`);
    assert.equal(closed.code, 4001, client.seen());
    // The room was loaded again after its 25 idle seconds: it had hibernated.
    const state = await request(hub.url, `/rooms/${room}`, { headers: bearer(fresh) });
    assert.equal(state.body.loads, 2, `the room hibernated and woke: ${show(state.body)}`);
    assert.deepEqual(state.body.presence, [], 'the expired member left presence');
  });
});

// ================================================================ rotation and claim checks

describe('HUB_SECRET_PREVIOUS, TOKEN_ISSUER, TOKEN_AUDIENCE and grant claim names', () => {
  const ROOMS = 'https://hub.example/rooms';
  const CAN = 'https://hub.example/can';
  const hub = suiteHub({
    runtime: 'miniflare',
    vars: {
      HUB_SECRET: SECRET,
      HUB_SECRET_PREVIOUS: PREVIOUS,
      TOKEN_ISSUER: 'https://id.example/',
      TOKEN_AUDIENCE: 'hub',
      TOKEN_ROOMS_CLAIM: ROOMS,
      TOKEN_CAN_CLAIM: CAN,
      RATE_PER_SEC: '0',
    },
  });
  const good = (extra = {}) => ({ sub: 'ann', exp: nowS() + 600, iss: 'https://id.example/', aud: ['api', 'hub'], [ROOMS]: ['*'], [CAN]: ['subscribe', 'publish'], ...extra });

  test('the current and the previous secret verify, on HTTP and WebSocket; a random one does not', async () => {
    const room = roomName('rotate');
    for (const secret of [SECRET, PREVIOUS]) {
      const token = jws({ alg: 'HS256' }, good(), hs256(secret));
      const res = await publishWith(hub.url, room, token);
      assert.equal(res.status, 201, show(res.body));
      const { welcome } = await WsClient.welcomed(hub.url, room, `?token=${token}`);
      assert.equal(welcome.you.user, 'ann');
    }
    const random = jws({ alg: 'HS256' }, good(), hs256('random-0123456789abcdef-0123456789abcdef-xyz'));
    const refused = await publishWith(hub.url, room, random);
    assert.equal(refused.status, 401);
    assert.match(refused.body.message, /bad signature/);
  });

  test('iss and aud must match; grants are read from the configured claim names only', async () => {
    const room = roomName('claims');
    const cases = [
      [good({ iss: 'https://evil.example/' }), 401, /wrong issuer/],
      [good({ iss: undefined }), 401, /wrong issuer/],
      [good({ aud: 'api' }), 401, /wrong audience/],
      [good({ aud: undefined }), 401, /wrong audience/],
      [good({ aud: 'hub' }), 201],
      // The default claim names grant nothing here.
      [good({ [ROOMS]: undefined, [CAN]: undefined, rooms: ['*'], can: ['publish'] }), 403, /room/],
      [good({ [CAN]: ['subscribe'] }), 403, /publish/],
    ];
    for (const [claims, status, message] of cases) {
      const res = await publishWith(hub.url, room, jws({ alg: 'HS256' }, claims, hs256(SECRET)));
      assert.equal(res.status, status, `${show(claims)}: ${show(res.body)}`);
      if (message) assert.match(res.body.message, message);
    }
  });
});

// ================================================================ identity provider keys

describe('RS256 and ES256 with an inline JWKS (no HUB_SECRET)', () => {
  const rsa = rsaKey('rsa-1');
  const ec = ecKey('ec-1');
  const other = rsaKey('rsa-1'); // same kid, another key: a forger's
  const hub = suiteHub({ runtime: 'miniflare', vars: { JWKS: JSON.stringify({ keys: [rsa.jwk, ec.jwk] }), RATE_PER_SEC: '0' } });

  for (const [name, key, signer] of [
    ['RS256', rsa, () => rs256(rsa.privateKey)],
    ['ES256', ec, () => es256(ec.privateKey)],
  ]) {
    test(`${name} tokens work on HTTP, WebSocket and SSE`, async () => {
      const room = roomName(name.toLowerCase());
      const token = jws({ alg: name, kid: key.kid, typ: 'JWT' }, claimsFor(`${name}-user`), signer());
      const sse = await SseClient.connect(hub.url, `/rooms/${room}/events`, bearer(token));
      const { client, welcome } = await WsClient.welcomed(hub.url, room, `?token=${token}`);
      assert.equal(welcome.you.user, `${name}-user`);
      const res = await publishWith(hub.url, room, token, 'signed');
      assert.equal(res.status, 201, show(res.body));
      const seen = await client.nextMessage(res.body.id);
      assert.equal(seen.from, `${name}-user`);
      const event = await sse.nextId(res.body.id);
      assert.equal(JSON.parse(event.data).from, `${name}-user`);
    });
  }

  test('the classic confusions and unknown keys are refused', async () => {
    const room = roomName('confusions');
    const claims = claimsFor('mallory');
    const rsaPublicPem = rsa.jwk.n; // what an attacker can read
    const derSigned = jws({ alg: 'ES256', kid: 'ec-1' }, claims, (input) => sign('sha256', Buffer.from(input), ec.privateKey));
    const cases = {
      'alg none': `${b64url('{"alg":"none"}')}.${b64url(JSON.stringify(claims))}.`,
      'HS256 signed with the public key': jws({ alg: 'HS256', kid: 'rsa-1' }, claims, hs256(rsaPublicPem)),
      'RS256 naming the EC key': jws({ alg: 'RS256', kid: 'ec-1' }, claims, rs256(rsa.privateKey)),
      'ES256 naming the RSA key': jws({ alg: 'ES256', kid: 'rsa-1' }, claims, es256(ec.privateKey)),
      'an unknown kid': jws({ alg: 'RS256', kid: 'rsa-9' }, claims, rs256(rsa.privateKey)),
      'another key under a known kid': jws({ alg: 'RS256', kid: 'rsa-1' }, claims, rs256(other.privateKey)),
      'RS384': jws({ alg: 'RS384', kid: 'rsa-1' }, claims, rs256(rsa.privateKey)),
      'a DER ECDSA signature': derSigned,
      'a tampered payload': (() => {
        const t = jws({ alg: 'RS256', kid: 'rsa-1' }, claims, rs256(rsa.privateKey)).split('.');
        return [t[0], b64url(JSON.stringify({ ...claims, sub: 'root' })), t[2]].join('.');
      })(),
    };
    for (const [name, token] of Object.entries(cases)) {
      const res = await publishWith(hub.url, room, token);
      assert.equal(res.status, 401, `${name}: ${show(res.body)}`);
      const refused = await request(hub.url, `/rooms/${room}/events`, { headers: bearer(token) });
      assert.equal(refused.status, 401, `${name} on SSE`);
    }
    const empty = await request(hub.url, `/rooms/${room}/messages`);
    assert.equal(empty.status, 401, 'a JWKS alone makes the hub closed');
  });
});

describe('RS256 keys from JWKS_URL (a loopback key server)', () => {
  const first = rsaKey('key-a');
  const second = ecKey('key-b');
  let served = { keys: [first.jwk] };
  let failing = false;
  const fetches = [];
  let server;
  let jwksUrl;
  before(async () => {
    server = http.createServer((req, res) => {
      fetches.push(Date.now());
      if (failing) {
        res.writeHead(500).end('down');
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(served));
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    jwksUrl = `http://127.0.0.1:${server.address().port}/.well-known/jwks.json`;
  });
  after(() => new Promise((resolve) => server.close(resolve)));
  const hub = suiteHub({ runtime: 'miniflare', get vars() { return { JWKS_URL: jwksUrl, RATE_PER_SEC: '0' }; } });

  test('keys are fetched once and cached; a rotated kid is picked up by a refetch, at most once a minute; an unknown kid is refused', { timeout: 110_000 }, async () => {
    const room = roomName('jwks-url');
    const tokenA = () => jws({ alg: 'RS256', kid: 'key-a' }, claimsFor('ada'), rs256(first.privateKey));
    const tokenB = () => jws({ alg: 'ES256', kid: 'key-b' }, claimsFor('bob'), es256(second.privateKey));
    assert.equal((await publishWith(hub.url, room, tokenA())).status, 201);
    assert.equal((await publishWith(hub.url, room, tokenA())).status, 201);
    assert.equal(fetches.length, 1, 'the set is cached');
    const fetchedAt = fetches[0];

    // The provider rotates to key-b. Within a minute of the last fetch an
    // unknown kid is refused without a fetch; then one refetch picks it up.
    served = { keys: [second.jwk] };
    const early = await publishWith(hub.url, room, tokenB());
    assert.equal(early.status, 401, show(early.body));
    assert.equal(fetches.length, 1, 'no refetch within a minute');
    await new Promise((r) => setTimeout(r, Math.max(0, fetchedAt + 61_000 - Date.now())));
    const rotated = await publishWith(hub.url, room, tokenB());
    assert.equal(rotated.status, 201, show(rotated.body));
    assert.equal(fetches.length, 2);
    const { welcome } = await WsClient.welcomed(hub.url, room, `?token=${tokenB()}`);
    assert.equal(welcome.you.user, 'bob');
    const sse = await SseClient.connect(hub.url, `/rooms/${room}/events?since=${rotated.body.id - 1}`, bearer(tokenB()));
    assert.equal(JSON.parse((await sse.nextId(rotated.body.id)).data).from, 'bob');

    // key-a left the set: refused, and within the minute not refetched.
    const gone = await publishWith(hub.url, room, tokenA());
    assert.equal(gone.status, 401);
    assert.equal(fetches.length, 2);
  });
});

describe('JWKS_URL that cannot be fetched', () => {
  const key = rsaKey('k');
  let server;
  let url;
  before(async () => {
    server = http.createServer((req, res) => res.writeHead(503).end('unavailable'));
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${server.address().port}/jwks.json`;
  });
  after(() => new Promise((resolve) => server.close(resolve)));
  const hub = suiteHub({ runtime: 'miniflare', get vars() { return { JWKS_URL: url }; } });

  test('a fetch failure answers 503 unavailable (the token may be fine: retry) and never opens the room', async () => {
    const room = roomName('keys-down');
    const token = jws({ alg: 'RS256', kid: 'k' }, claimsFor('x'), rs256(key.privateKey));
    const res = await publishWith(hub.url, room, token);
    assert.equal(res.status, 503, show(res.body));
    assert.equal(res.body.error, 'unavailable');
    assert.ok(Number(res.headers.get('retry-after')) >= 1);
    const anon = await request(hub.url, `/rooms/${room}/messages`);
    assert.equal(anon.status, 401);
    const ws = new WsClient(wsUrl(hub.url, room, `?token=${token}`));
    await assert.rejects(ws.opened);
  });
});

// ================================================================ connect tickets

describe('connect tickets (POST /rooms/{room}/ticket, ?ticket=)', () => {
  const hub = suiteHub({ runtime: 'miniflare', vars: { HUB_SECRET: SECRET, TOKEN_LEEWAY_SECS: '0', RATE_PER_SEC: '0' } });
  const ticketFor = (room, token, init = {}) =>
    request(hub.url, `/rooms/${room}/ticket`, { method: 'POST', headers: bearer(token), ...init });

  test('a ticket opens one WebSocket or SSE stream, once, in its room only, with exactly its token grants', async () => {
    const room = roomName('ticket');
    const reader = jws({ alg: 'HS256' }, claimsFor('reader', { can: ['subscribe'] }), hs256(SECRET));
    const issued = await ticketFor(room, reader);
    assert.equal(issued.status, 200, show(issued.body));
    assert.ok(issued.body.expires_in > 0 && issued.body.expires_in <= 60, show(issued.body));
    assert.equal(issued.headers.get('cache-control'), 'no-store');
    const { ticket } = issued.body;
    assert.ok(!ticket.includes(reader.split('.')[2]), 'the ticket is not the token');

    const { client, welcome } = await WsClient.welcomed(hub.url, room, `?ticket=${ticket}`);
    assert.equal(welcome.you.user, 'reader', 'the ticket is bound to its user');
    client.send({ type: 'publish', data: 'no', cid: 'c-1' });
    const refused = await client.next((f) => f.type === 'error' && f.cid === 'c-1', 'the publish refusal');
    assert.equal(refused.code, 'forbidden', 'a subscribe-only token makes a subscribe-only ticket');

    const again = await request(hub.url, `/rooms/${room}/events?ticket=${ticket}`);
    assert.equal(again.status, 401, 'used once, never twice');
    const other = (await ticketFor(room, reader)).body.ticket;
    const elsewhere = await request(hub.url, `/rooms/${roomName('other')}/events?ticket=${other}`);
    assert.equal(elsewhere.status, 401, 'not for another room');
    const sse = await SseClient.connect(hub.url, `/rooms/${room}/events?ticket=${other}`);
    assert.equal(sse.status, 200, 'still good in its own room: the foreign try did not use it');
    for (const bad of ['short', 'x'.repeat(40), 'has%20space-0123456789']) {
      const res = await request(hub.url, `/rooms/${room}/events?ticket=${bad}`);
      assert.equal(res.status, 401, bad);
    }
  });

  test('a ticket lives no longer than its token; the token only travels in Authorization', async () => {
    const room = roomName('ticket-life');
    const exp = nowS() + 3;
    const short = jws({ alg: 'HS256' }, claimsFor('brief', { exp }), hs256(SECRET));
    const issued = await ticketFor(room, short);
    assert.equal(issued.status, 200, show(issued.body));
    assert.ok(issued.body.expires_in <= 3, `expires_in ${issued.body.expires_in} stays within the token`);
    await new Promise((r) => setTimeout(r, Math.max(0, exp * 1000 - Date.now() + 200)));
    const late = await request(hub.url, `/rooms/${room}/events?ticket=${issued.body.ticket}`);
    assert.equal(late.status, 401, 'not after its lifetime');

    const long = jws({ alg: 'HS256' }, claimsFor('patient'), hs256(SECRET));
    const inUrl = await request(hub.url, `/rooms/${room}/ticket?token=${long}`, { method: 'POST' });
    assert.equal(inUrl.status, 401, 'a ticket is never issued for a token in the URL');
    const none = await request(hub.url, `/rooms/${room}/ticket`, { method: 'POST' });
    assert.equal(none.status, 401);
    const get = await request(hub.url, `/rooms/${room}/ticket`, { headers: bearer(long) });
    assert.equal(get.status, 405);
  });
});
