// Webhooks (docs/PROTOCOL.md, "Webhooks"), against the built Worker on bare
// workerd with a loopback receiver that verifies every request with the npm
// `standardwebhooks` package: events arrive signed and in order; a receiver
// that fails gets the same webhook-id again and nothing overtakes it; a
// SIGKILL with events pending loses none; occupancy and membership events
// fire once per transition; an event out of attempts is dropped and counted.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHmac, randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { startHub } from '../scripts/launch/hub.mjs';
import { stateDir } from '../scripts/launch/state.mjs';
import { freePort } from '../scripts/launch/ports.mjs';
import { roomName, WsClient, closeWsClients, request, waitFor, show } from './support.mjs';

const WEBHOOK_SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const SECRET = 'webhooks-secret-0123456789abcdef-0123456789abcdef';
const b64url = (x) => Buffer.from(x).toString('base64url');
function tokenFor(sub) {
  const claims = { sub, exp: Math.floor(Date.now() / 1000) + 600, rooms: ['*'], can: ['subscribe', 'publish'] };
  const input = `${b64url('{"alg":"HS256"}')}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
}

/**
 * A loopback receiver: verifies each request (standardwebhooks), records
 * every attempt, and answers what `answer(attempt)` says (200 by default).
 */
async function startReceiver() {
  const verifier = new Webhook(WEBHOOK_SECRET);
  const receiver = {
    attempts: [],
    answer: () => 200,
    /** The verified events delivered (a 2xx answered), in order. */
    delivered() {
      return this.attempts.filter((a) => a.status < 300);
    },
    ofRoom(room) {
      return this.delivered().filter((a) => a.event.room === room);
    },
  };
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      let event = null;
      let verified = false;
      try {
        event = verifier.verify(body, req.headers);
        verified = true;
      } catch (e) {
        event = { error: String(e) };
      }
      const attempt = { id: req.headers['webhook-id'], event, verified };
      attempt.status = verified ? receiver.answer(attempt) : 400;
      receiver.attempts.push(attempt);
      res.writeHead(attempt.status).end();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver.url = `http://127.0.0.1:${server.address().port}/hooks`;
  receiver.close = () => new Promise((resolve) => server.close(resolve));
  return receiver;
}

/**
 * A loopback receiver and a hub on bare workerd posting to it (with
 * `vars`), for one describe block: handed to `assign` once started,
 * stopped after its last test.
 */
function webhookSuite(vars, assign) {
  const started = {};
  before(async () => {
    started.receiver = await startReceiver();
    started.hub = await startHub({ runtime: 'workerd', vars: { ...vars, WEBHOOK_URL: started.receiver.url, WEBHOOK_SECRET } });
    assign(started);
  });
  after(async () => {
    await closeWsClients();
    await started.hub?.stop();
    await started.receiver?.close();
  });
}

const types = (attempts) => attempts.map((a) => a.event.type);
const post = (url, room, data, headers = {}) =>
  request(url, `/rooms/${room}/messages`, { method: 'POST', headers: { 'Content-Type': 'application/json', ...headers }, body: JSON.stringify({ data }) });

describe('webhooks (bare workerd, loopback receiver)', () => {
  let receiver;
  let hub;
  webhookSuite({ WEBHOOK_MAX_ATTEMPTS: '3', RATE_PER_SEC: '0' }, (started) => {
    ({ receiver, hub } = started);
  });

  test('events arrive signed, in order: occupied, joined, each message, left, vacated', async () => {
    const room = roomName('hooks');
    const { client, welcome } = await WsClient.welcomed(hub.url, room);
    const ids = [];
    for (const data of ['a', 'b', 'c']) ids.push((await post(hub.url, room, data)).body.id);
    await client.close();
    await waitFor(() => receiver.ofRoom(room).length >= 7, 15_000, 'seven events', () => show(types(receiver.ofRoom(room))));
    const events = receiver.ofRoom(room);
    assert.ok(events.every((a) => a.verified), 'every request verifies');
    assert.deepEqual(types(events), ['room.occupied', 'member.joined', 'message.published', 'message.published', 'message.published', 'member.left', 'room.vacated']);
    assert.deepEqual(events.filter((a) => a.event.type === 'message.published').map((a) => a.event.data.id), ids);
    assert.equal(events[1].event.data.user, welcome.you.presence_name);
    assert.equal(new Set(events.map((a) => a.id)).size, 7, 'one webhook-id per event');
    await waitFor(async () => (await request(hub.url, `/rooms/${room}`)).body.webhooks?.pending === 0, 5000, 'an empty outbox');
    const state = await request(hub.url, `/rooms/${room}`);
    assert.equal(state.body.webhooks.delivered, 7, show(state.body.webhooks));
  });

  test('a receiver that answers 500 twice gets the same webhook-id again; no later event overtakes it', async () => {
    const room = roomName('retry');
    let failures = 0;
    receiver.answer = (a) => (a.event.room === room && a.event.data?.data === 'first' && failures++ < 2 ? 500 : 200);
    const first = await post(hub.url, room, 'first');
    const second = await post(hub.url, room, 'second');
    await waitFor(() => receiver.ofRoom(room).length >= 2, 15_000, 'both delivered');
    receiver.answer = () => 200;
    const attempts = receiver.attempts.filter((a) => a.event.room === room);
    assert.deepEqual(attempts.map((a) => a.status), [500, 500, 200, 200]);
    assert.equal(new Set(attempts.slice(0, 3).map((a) => a.id)).size, 1, 'the same webhook-id on every attempt');
    assert.deepEqual(attempts.map((a) => a.event.data.id), [first.body.id, first.body.id, first.body.id, second.body.id]);
  });

  test('an event out of attempts is dropped and counted; the next one follows', async () => {
    const room = roomName('giveup');
    receiver.answer = (a) => (a.event.room === room && a.event.data?.data === 'doomed' ? 500 : 200);
    await post(hub.url, room, 'doomed');
    const next = await post(hub.url, room, 'next');
    await waitFor(() => receiver.ofRoom(room).length >= 1, 20_000, 'the next event');
    receiver.answer = () => 200;
    assert.equal(receiver.attempts.filter((a) => a.event.room === room && a.event.data?.data === 'doomed').length, 3, 'WEBHOOK_MAX_ATTEMPTS=3');
    assert.equal(receiver.ofRoom(room)[0].event.data.id, next.body.id);
    const state = await request(hub.url, `/rooms/${room}`);
    assert.deepEqual(state.body.webhooks, { pending: 0, delivered: 1, failed: 1, dropped: 0 });
  });
});

describe('webhooks: membership and occupancy once per transition (HUB_SECRET)', () => {
  let receiver;
  let hub;
  webhookSuite({ HUB_SECRET: SECRET, RATE_PER_SEC: '0' }, (started) => {
    ({ receiver, hub } = started);
  });

  test('two sockets of one user: one join, one leave; the room is occupied and vacated once', async () => {
    const room = roomName('once');
    const { client: a1 } = await WsClient.welcomed(hub.url, room, `?token=${tokenFor('alice')}`);
    const { client: a2 } = await WsClient.welcomed(hub.url, room, `?token=${tokenFor('alice')}`);
    const { client: b } = await WsClient.welcomed(hub.url, room, `?token=${tokenFor('bob')}`);
    await a1.close();
    await b.close();
    await a2.close();
    await waitFor(() => receiver.ofRoom(room).some((a) => a.event.type === 'room.vacated'), 15_000, 'room.vacated', () => show(types(receiver.ofRoom(room))));
    const seen = receiver.ofRoom(room).map((a) => `${a.event.type}${a.event.data?.user ? `:${a.event.data.user}` : ''}`);
    assert.deepEqual(seen, ['room.occupied', 'member.joined:alice', 'member.joined:bob', 'member.left:bob', 'member.left:alice', 'room.vacated']);
  });
});

describe('webhooks survive a SIGKILL (bare workerd, same storage)', () => {
  test('events pending when workerd is killed are all delivered after a restart, in order', async () => {
    const receiver = await startReceiver();
    const state = stateDir();
    const port = await freePort();
    const vars = { WEBHOOK_URL: receiver.url, WEBHOOK_SECRET, RATE_PER_SEC: '0' };
    let hub = await startHub({ runtime: 'workerd', port, stateDir: state.dir, vars });
    try {
      const room = roomName('crash');
      receiver.answer = () => 503;
      const ids = [];
      for (const data of [1, 2, 3]) ids.push((await post(hub.url, room, data)).body.id);
      await waitFor(() => receiver.attempts.length >= 1, 10_000, 'a first, failed attempt');
      await hub.crash();
      receiver.answer = () => 200;
      hub = await startHub({ runtime: 'workerd', port, stateDir: state.dir, vars });
      await waitFor(() => receiver.ofRoom(room).length >= 3, 30_000, 'every pending event', () => show(receiver.attempts.map((a) => [a.status, a.event.data?.id])));
      assert.deepEqual(receiver.ofRoom(room).map((a) => a.event.data.id), ids, 'in order, each at least once');
    } finally {
      await hub?.stop();
      state.cleanup();
      await receiver.close();
    }
  });
});
