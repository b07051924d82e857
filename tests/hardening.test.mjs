// Hostile and unlucky clients against the built Worker on bare workerd:
// nothing one client does may take a room's memory, storage or attention
// from everyone else in it (issues 12 and 13; docs/PROTOCOL.md, "Limits").
//
// Memory findings are measured as the workerd process's RSS before and
// after, against a bound each test states; storage findings as the files
// in the hub's storage folder.
import { describe, test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createHmac } from 'node:crypto';
import { startHub } from '../scripts/launch/hub.mjs';
import { roomName, WsClient, closeWsClients, wsUrl, request, waitFor, withTimeout, show, range, WAIT_MS, suiteHub } from './support.mjs';

const MiB = 1024 * 1024;
const SECRET = 'hardening-secret-0123456789abcdef-0123456789';

/** The resident memory of a process, in bytes. */
function rssOf(pid) {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'));
  return Number(line.split(/\s+/)[1]) * 1024;
}

const b64url = (x) => Buffer.from(x).toString('base64url');
function mint(claims, secret = SECRET, header = { alg: 'HS256', typ: 'JWT' }) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${b64url(createHmac('sha256', secret).update(input).digest())}`;
}
const tokenFor = (sub, can = ['subscribe', 'publish']) =>
  mint({ sub, exp: Math.floor(Date.now() / 1000) + 600, rooms: ['*'], can });

/** The rooms' database files under a hub's storage folder (not workerd's own metadata), with their sizes. */
function roomFiles(dir) {
  return readdirSync(dir, { recursive: true })
    .filter((f) => !f.includes('metadata') && statSync(join(dir, f)).isFile())
    .map((f) => ({ name: f, bytes: statSync(join(dir, f)).size }));
}

const post = (url, room, body, headers = {}) =>
  request(url, `/rooms/${room}/messages`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

/**
 * A chunked POST (no Content-Length) of `total` bytes in 64 KiB chunks over
 * a raw socket, so the hub may answer and close while the body is still
 * being sent; resolves to { status, body }.
 */
function chunkedPost(url, path, total) {
  const { hostname, port } = new URL(url);
  return withTimeout(
    new Promise((resolve, reject) => {
      const socket = net.connect(Number(port), hostname);
      let answer = '';
      let stop = false;
      socket.on('data', (d) => {
        answer += d;
        stop = true;
      });
      socket.on('error', () => {}); // EPIPE/ECONNRESET once the hub answered
      socket.on('close', () => {
        const status = Number(answer.split(' ')[1]);
        const json = answer.slice(answer.indexOf('{'), answer.lastIndexOf('}') + 1);
        // The hub answers 413 and closes while the body is still coming;
        // the kernel may then reset the connection before the answer is
        // read (status 0). Either way the body was not read whole.
        if (!status) return resolve({ status: 0, body: null });
        resolve({ status, body: JSON.parse(json) });
      });
      socket.on('connect', async () => {
        socket.write(`POST ${path} HTTP/1.1\r\nHost: ${hostname}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`);
        const chunk = Buffer.alloc(64 * 1024, 'a');
        const frame = Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]);
        for (let sent = 0; sent < total && !stop && !socket.destroyed; sent += chunk.length) {
          if (!socket.write(frame)) await new Promise((r) => socket.once('drain', r).once('close', r));
        }
        if (!socket.destroyed) socket.end('0\r\n\r\n');
      });
    }),
    60_000,
    `chunked POST of ${total} bytes`,
  );
}

/** `n` messages of about `bytes` each, published over HTTP. */
async function publishBig(url, room, n, bytes) {
  const data = 'x'.repeat(bytes - 200);
  for (let i = 0; i < n; i += 1) {
    const res = await post(url, room, { data });
    assert.equal(res.status, 201, show(res.body));
  }
}

describe('a hub with rate limits off (open mode)', () => {
  const hub = suiteHub({ runtime: 'workerd', vars: { RATE_PER_SEC: '0', MAX_CONNECTIONS_PER_ROOM: '60' } });

  test('r13.1 a chunked publish body is refused at MAX_MESSAGE_BYTES and never held whole', async () => {
    const room = roomName('chunked');
    const before = rssOf(hub.pid);
    const grownAfter = [];
    for (let i = 0; i < 8; i += 1) {
      const res = await chunkedPost(hub.url, `/rooms/${room}/messages`, 24 * MiB);
      assert.ok(res.status === 413 || res.status === 0, `status ${res.status}: ${show(res.body)}`);
      if (res.status === 413) assert.equal(res.body.error, 'too_large');
      grownAfter.push(rssOf(hub.pid) - before);
    }
    // 192 MiB were offered. The room keeps at most 64 KiB of a body and
    // drains the rest in JavaScript (it must read it to its end, see
    // src/body.rs), so memory levels off at the garbage collector's high
    // water mark instead of growing with what is sent.
    const mib = grownAfter.map((b) => (b / MiB).toFixed(1)).join(', ');
    assert.ok(grownAfter.at(-1) < 96 * MiB, `workerd grew by ${mib} MiB`);
    assert.ok(grownAfter.at(-1) - grownAfter[3] < 24 * MiB, `still growing after half the requests: ${mib} MiB`);
    const ok = await post(hub.url, room, { data: 'after' });
    assert.equal(ok.status, 201, 'the room still takes publishes');
  });

  test('r13.2 polls of a room full of maximum-size messages answer bounded pages that continue', async () => {
    const room = roomName('bigpoll');
    await publishBig(hub.url, room, 40, 64 * 1024);
    const ids = [];
    let since = 0;
    for (let page = 0; page < 20 && ids.length < 40; page += 1) {
      const res = await request(hub.url, `/rooms/${room}/messages?since=${since}&limit=1000`);
      assert.equal(res.status, 200, show(res.body));
      assert.ok(res.text.length < 700 * 1024, `a page of ${res.text.length} bytes`);
      assert.ok(res.body.messages.length > 0, 'every page makes progress');
      ids.push(...res.body.messages.map((m) => m.id));
      since = ids.at(-1);
    }
    assert.deepEqual(ids, range(1, 40), 'continuing from the last id gets every message once');
    const latest = await request(hub.url, `/rooms/${room}/messages`);
    assert.equal(latest.status, 200);
    assert.equal(latest.body.messages.at(-1).id, 40, 'the newest page ends at the newest message');
  });

  test('r13.3 sockets that stop reading are dropped (4008) and do not grow the room without bound', async () => {
    const room = roomName('paused');
    const reader = (await WsClient.welcomed(hub.url, room)).client;
    const paused = [];
    for (let i = 0; i < 8; i += 1) {
      const { client } = await WsClient.welcomed(hub.url, room);
      client.ws._socket.pause(); // the TCP connection stays open; nothing is read
      paused.push(client);
    }
    const before = rssOf(hub.pid);
    // A reading client shows it is alive: the runtime answers its pings.
    const keepAlive = setInterval(() => reader.ws.send('ping'), 200);
    try {
      await publishBig(hub.url, room, 150, 64 * 1024); // ~9.4 MiB to each socket
      await reader.nextMessage(150, 30_000);
    } finally {
      clearInterval(keepAlive);
    }
    const grown = rssOf(hub.pid) - before;
    // Unbounded, 8 paused sockets would queue ~75 MiB; dropped at 4 MiB each, at most ~32.
    assert.ok(grown < 60 * MiB, `workerd grew by ${(grown / MiB).toFixed(1)} MiB`);
    const state = (await request(hub.url, `/rooms/${room}`)).body;
    assert.equal(state.connections.ws, 1, `only the reader is left: ${show(state.connections)}`);
    for (const c of paused) c.ws._socket.resume();
    for (const c of paused) {
      const info = await c.waitClosed(20_000);
      assert.equal(info.code, 4008, c.seen());
      assert.equal(info.reason, 'slow_consumer');
    }
    assert.equal(reader.closeInfo, null, 'the reading socket is still open');
  });

  test('r13.3 a long WebSocket replay goes out in bounded batches, the next when the client asks; live messages wait their turn', async () => {
    const room = roomName('batches');
    await publishBig(hub.url, room, 30, 64 * 1024); // ~1.9 MiB of history
    const { client } = await WsClient.welcomed(hub.url, room, '?since=0');
    const more = await client.nextType('more');
    const batch = client.ofType('message');
    const batchBytes = batch.reduce((n, m) => n + JSON.stringify(m).length, 0);
    assert.ok(batch.length >= 1 && batchBytes <= 512 * 1024, `a batch of ${batch.length} messages, ${batchBytes} bytes`);
    assert.deepEqual(batch.map((m) => m.id), range(1, batch.length), 'the batch starts after since, in order');
    assert.equal(more.after, batch.at(-1).id, 'more names the last id of the batch');

    // A live message while the socket catches up is held back, and no
    // further batch comes unasked: a presence round trip shows nothing
    // else arrived in between.
    const live = await post(hub.url, room, { data: 'live while catching up' });
    assert.equal(live.status, 201);
    client.send({ type: 'presence' });
    await client.nextType('presence');
    assert.equal(client.ofType('message').length, batch.length, `nothing unasked: ${client.seen()}`);

    // Asking batch after batch delivers everything once, in order, the
    // live message in its place, then live messages again.
    let asked = 0;
    while (client.ofType('message').at(-1)?.id !== 31) {
      assert.ok(asked < 10, `still catching up after ${asked} batches: ${client.seen()}`);
      client.send({ type: 'more' });
      asked += 1;
      await client.next((f) => (f.type === 'more' && f.after > more.after) || (f.type === 'message' && f.id === 31), `batch ${asked}`);
    }
    assert.ok(asked >= 3, `${asked} more batches for ~1.9 MiB`);
    await post(hub.url, room, { data: 'live after' });
    await client.nextMessage(32);
    assert.deepEqual(client.messageIds(), range(1, 32), 'every id once, in order');
    assert.ok(client.ofType('more').every((m) => m.after < 31), 'no more once caught up');

    // A `more` nobody asked for is an invalid frame (a strike), not a crash.
    client.send({ type: 'more' });
    const err = await client.nextType('error');
    assert.equal(err.code, 'invalid_body', show(err));
    assert.equal(client.closeInfo, null);
  });

  test('r13.3 sockets that resume far behind and stop reading hold one replay batch each, not the history', async (t) => {
    const room = roomName('pausedreplay');
    await publishBig(hub.url, room, 150, 64 * 1024); // ~9.4 MiB of history
    const before = rssOf(hub.pid);
    const paused = [];
    for (let i = 0; i < 8; i += 1) {
      const client = new WsClient(wsUrl(hub.url, room, '?since=0'));
      // Stop reading as soon as the upgrade is answered.
      client.ws.once('upgrade', (res) => res.socket.pause());
      paused.push(client);
    }
    await withTimeout(Promise.all(paused.map((c) => c.opened)), 20_000, 'eight upgrades');
    // The room answered every upgrade with one batch; it stays quiet after.
    const state = await request(hub.url, `/rooms/${room}`);
    assert.equal(state.body.connections.ws, 8, show(state.body));
    const grown = rssOf(hub.pid) - before;
    t.diagnostic(`workerd grew by ${(grown / MiB).toFixed(1)} MiB for 8 paused replays`);
    // The whole history to each would be ~75 MiB; one batch each is 4 MiB.
    assert.ok(grown < 24 * MiB, `workerd grew by ${(grown / MiB).toFixed(1)} MiB`);
    for (const c of paused) c.ws._socket.resume();
    for (const c of paused) {
      const more = await c.nextType('more', 20_000);
      const ids = c.messageIds();
      assert.deepEqual(ids, range(1, more.after), 'one batch, in order');
      assert.ok(ids.length < 10, `${ids.length} messages in one batch`);
    }
  });

  test('r12.4 fifty timed-out long polls leave nothing behind in the room', async () => {
    const room = roomName('waiters');
    await post(hub.url, room, { data: 1 });
    const polls = range(1, 50).map(() => request(hub.url, `/rooms/${room}/messages?since=1&wait=1`));
    await waitFor(async () => (await request(hub.url, `/rooms/${room}`)).body.poll_waiters > 0, WAIT_MS, 'held polls');
    const answers = await withTimeout(Promise.all(polls), 20_000, '50 long polls');
    for (const a of answers) assert.equal(a.status, 200);
    const state = (await request(hub.url, `/rooms/${room}`)).body;
    assert.equal(state.poll_waiters, 0, show(state));
    assert.equal(state.connections.poll, 0, show(state));
  });

  test('r13.7 reads and subscriptions of rooms never published to keep no data', async () => {
    const before = new Set(roomFiles(hub.stateDir).map((f) => f.name));
    for (let i = 0; i < 20; i += 1) {
      const room = roomName(`ghost${i}`);
      assert.equal((await request(hub.url, `/rooms/${room}`)).status, 200);
      assert.equal((await request(hub.url, `/rooms/${room}/messages?since=0`)).status, 200);
    }
    const { client } = await WsClient.welcomed(hub.url, roomName('ghostws'));
    client.send({ type: 'presence' });
    await client.nextType('presence');
    await client.close();
    const ghosts = roomFiles(hub.stateDir).filter((f) => !before.has(f.name));
    // Before: a database, its write-ahead log and its shared memory per
    // room (~68 KB). Now workerd leaves at most an empty database file,
    // and on the platform an object without data is not kept at all.
    assert.ok(ghosts.every((f) => f.name.endsWith('.sqlite') && f.bytes <= 4096), show(ghosts));
    const room = roomName('real');
    assert.equal((await post(hub.url, room, { data: 1 })).status, 201);
    assert.equal((await request(hub.url, `/rooms/${room}/messages?since=0`)).body.messages.length, 1);
    await waitFor(() => roomFiles(hub.stateDir).some((f) => f.name.endsWith('-wal') && f.bytes > 0), WAIT_MS, 'the log of the published room on disk');
  });

  test('r13.8 error, open and close are reserved event names', async () => {
    const room = roomName('reserved');
    for (const event of ['error', 'open', 'close']) {
      const res = await post(hub.url, room, { event, data: 1 });
      assert.equal(res.status, 400, event);
      assert.equal(res.body.error, 'reserved_event', event);
    }
  });

  test('r13.9 anonymous connections are capped per room (MAX_CONNECTIONS_PER_ROOM)', async () => {
    const room = roomName('cap');
    const streams = [];
    for (let i = 0; i < 60; i += 1) {
      const res = await fetch(`${hub.url}/rooms/${room}/events`);
      assert.equal(res.status, 200, `stream ${i}`);
      streams.push(res);
    }
    const refused = await request(hub.url, `/rooms/${room}/events`);
    assert.equal(refused.status, 429, refused.text);
    assert.equal(refused.body.error, 'room_full');
    assert.ok(Number(refused.headers.get('retry-after')) >= 1);
    const state = await request(hub.url, `/rooms/${room}`);
    assert.equal(state.status, 200, 'reading the room is not a connection');
    assert.equal(state.body.connect_refused?.error, 'room_full', show(state.body));
    for (const s of streams) await s.body.cancel();
  });
});

describe('WebSocket budgets (RATE_PER_SEC=20, RATE_BURST=40)', () => {
  const hub = suiteHub({ runtime: 'workerd', vars: { HUB_SECRET: SECRET, RATE_PER_SEC: '20', RATE_BURST: '40', MAX_CONNECTIONS_PER_USER: '50' } });

  const open = (room, sub, query = '') => WsClient.welcomed(hub.url, room, `?token=${tokenFor(sub)}${query}`);

  test('r12.3 80 pending publishes re-sent at once and then paced by retry_after_ms all settle once; never closed', async () => {
    const room = roomName('catchup');
    const { client } = await open(room, 'pacer');
    // The reconnect: all 80 pending publishes at once.
    for (const i of range(1, 80)) client.send({ type: 'publish', data: i, cid: `p-${i}` });
    const acked = new Map();
    const pending = [];
    let wait = 0;
    for (const i of range(1, 80)) {
      const cid = `p-${i}`;
      const reply = await client.next((f) => (f.type === 'ack' || f.type === 'error') && f.cid === cid, `reply to ${cid}`);
      if (reply.type === 'ack') acked.set(cid, reply.id);
      else {
        assert.equal(reply.code, 'rate_limited', show(reply));
        assert.ok(reply.retry_after_ms > 0, show(reply));
        wait = reply.retry_after_ms;
        pending.push(cid);
      }
    }
    assert.ok(pending.length > 0, 'the burst was over the budget');
    // Then paced: one re-send per retry_after_ms, as the error said.
    while (pending.length > 0) {
      await new Promise((r) => setTimeout(r, wait));
      const cid = pending[0];
      client.send({ type: 'publish', data: Number(cid.slice(2)), cid });
      const reply = await client.next((f) => (f.type === 'ack' || f.type === 'error') && f.cid === cid && !acked.has(cid), `reply to ${cid}`);
      if (reply.type === 'ack') {
        acked.set(cid, reply.id);
        pending.shift();
      } else {
        wait = reply.retry_after_ms;
      }
    }
    assert.equal(acked.size, 80);
    assert.equal(client.closeInfo, null, `never closed: ${client.seen()}`);
    const ids = [...acked.values()].sort((a, b) => a - b);
    assert.deepEqual(ids, range(1, 80), 'each publish stored once');
    const errorsPerCid = new Map();
    for (const e of client.ofType('error')) errorsPerCid.set(e.cid, (errorsPerCid.get(e.cid) ?? 0) + 1);
    assert.ok([...errorsPerCid.keys()].every((cid) => cid?.startsWith('p-')), 'every error names its publish');
  });

  test('r13.5 reconnecting does not refill the publish budget; HTTP shares it', async () => {
    const room = roomName('budget');
    // The bucket refills at 20/s, so every bound below is "a full bucket
    // plus what the elapsed time refilled": never a guess at the speed.
    const refilled = (since) => Math.ceil((20 * (Date.now() - since)) / 1000) + 1;
    const started = Date.now();
    let accepted = 0;
    for (let round = 0; round < 3; round += 1) {
      const { client } = await open(room, 'looper');
      for (let i = 0; i < 40; i += 1) client.send({ type: 'publish', data: i, cid: `r${round}-${i}` });
      for (let i = 0; i < 40; i += 1) {
        const reply = await client.next((f) => (f.type === 'ack' || f.type === 'error') && f.cid === `r${round}-${i}`, `reply ${round}/${i}`);
        if (reply.type === 'ack') accepted += 1;
      }
      await client.close();
    }
    assert.ok(accepted <= 40 + refilled(started), `${accepted} accepted over three connections`);
    // The same user over HTTP: a burst of 30 at once gets no more than the
    // tokens refilled since the sockets emptied the bucket.
    const emptied = Date.now();
    const auth = { Authorization: `Bearer ${tokenFor('looper')}` };
    const replies = await Promise.all(range(1, 30).map((i) => post(hub.url, room, { data: `http-${i}` }, auth)));
    const allowed = refilled(emptied);
    const created = replies.filter((r) => r.status === 201).length;
    const refused = replies.filter((r) => r.status === 429);
    assert.ok(created <= allowed, `the same user over HTTP shares the budget: ${created} of 30 accepted, ${allowed} refilled`);
    assert.ok(refused.length >= 30 - allowed, `${refused.length} refused`);
    for (const r of refused) assert.ok(Number(r.headers.get('retry-after')) >= 1);
    const other = await post(hub.url, room, { data: 'other' }, { Authorization: `Bearer ${tokenFor('someone-else')}` });
    assert.equal(other.status, 201, 'another user has a budget of their own');
  });

  test('r13.4 a flood of presence requests is cut off (1008) and another member is still answered promptly', async () => {
    const room = roomName('flood');
    const { client: member } = await open(room, 'member');
    const { client: flooder } = await open(room, 'flooder');
    const frame = JSON.stringify({ type: 'presence' });
    for (let i = 0; i < 5000; i += 1) flooder.ws.send(frame);
    const info = await flooder.waitClosed(20_000);
    assert.equal(info.code, 1008, flooder.seen());
    const answers = flooder.ofType('presence').length;
    assert.ok(answers < 400, `the flooder got ${answers} presence answers of 5000 asked`);
    const started = Date.now();
    member.send({ type: 'publish', data: 'still here', cid: 'm-1' });
    await member.nextAck('m-1', 5000);
    assert.ok(Date.now() - started < 5000);
  });

  test('r13.4 invalid frames are strikes: 20 at once close the socket with 1008', async () => {
    const room = roomName('invalid');
    const { client } = await open(room, 'garbler');
    for (let i = 0; i < 100; i += 1) client.ws.send(`not json ${i}`);
    const info = await client.waitClosed();
    assert.equal(info.code, 1008, client.seen());
    assert.ok(client.ofType('error').length <= 21, `${client.ofType('error').length} error frames`);
  });

  test('r13.6 a sub reaches the room byte for byte: " alice" and "alice " are not alice', async () => {
    const room = roomName('subs');
    const subs = ['alice', ' alice', 'alice ', ' '];
    for (const sub of subs) {
      const res = await post(hub.url, room, { data: sub }, { Authorization: `Bearer ${tokenFor(sub)}` });
      assert.equal(res.status, 201, `${JSON.stringify(sub)}: ${show(res.body)}`);
    }
    const page = await request(hub.url, `/rooms/${room}/messages?since=0`, { headers: { Authorization: `Bearer ${tokenFor('reader')}` } });
    assert.deepEqual(page.body.messages.map((m) => m.from), subs);
    const { welcome } = await open(room, ' alice');
    assert.equal(welcome.you.user, ' alice');
  });

  test('r12.4 a sub with control characters is refused with 401, never a 500', async () => {
    const room = roomName('ctl');
    for (const sub of ['al\u0000ice', 'a\nb', 'tab\t', '\u0085']) {
      const res = await post(hub.url, room, { data: 1 }, { Authorization: `Bearer ${tokenFor(sub)}` });
      assert.equal(res.status, 401, `${JSON.stringify(sub)}: ${show(res.body)}`);
      assert.equal(res.body.error, 'unauthorized');
    }
  });

  test('r13.9 a token with a crit header is refused', async () => {
    const token = mint({ sub: 'c', exp: Math.floor(Date.now() / 1000) + 60, rooms: ['*'] }, SECRET, { alg: 'HS256', crit: ['exp'] });
    const res = await request(hub.url, `/rooms/${roomName('crit')}`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(res.status, 401, show(res.body));
  });
});

describe('configuration and origins', () => {
  test('r13.9 a HUB_SECRET shorter than 32 bytes fails every request loudly', async () => {
    const hub = await startHub({ runtime: 'workerd', vars: { HUB_SECRET: 'topsecret' } });
    try {
      for (const path of [`/rooms/${roomName('s')}`, `/rooms/${roomName('s')}/messages`]) {
        const res = await request(hub.url, path);
        assert.equal(res.status, 500, path);
        assert.equal(res.body.error, 'bad_config');
        assert.ok(!res.text.includes('topsecret'), 'the secret never leaks');
      }
    } finally {
      await hub.stop();
    }
  });

  test('r13.9 the Host header does not make an origin same-origin', async () => {
    const hub = await startHub({ runtime: 'workerd', vars: { ALLOWED_ORIGINS: 'https://good.example' } });
    try {
      const room = roomName('host');
      const forged = await new Promise((resolve, reject) => {
        const req = http.get(`${hub.url}/rooms/${room}/messages`, {
          headers: { Origin: 'https://evil.example', Host: 'evil.example' },
        });
        req.on('response', (res) => {
          res.resume();
          resolve(res.statusCode);
        });
        req.on('error', reject);
      });
      assert.equal(forged, 403);
      const good = await request(hub.url, `/rooms/${room}/messages`, { headers: { Origin: 'https://good.example' } });
      assert.equal(good.status, 200);
    } finally {
      await hub.stop();
    }
  });
});
