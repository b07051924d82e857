// The browser client (/client.js) and the demo page in a real headless
// Chromium driven by playwright-core. Pages import only /client.js; most
// reach the hub through a loopback proxy (tests/proxy.mjs) that the test
// switches to block, drop and stall connections.
//
// Three hubs: an open one (no rate limit, 1 s SSE heartbeats, a history of
// 200) for transports, fallback, watchdogs, restarts and the demo; a
// rate-limited one (2/s, burst 3) for publishes; one with auth and one
// connection per user for expired tokens, 403 and 429.
//
// CLIENT_FROM_SOURCE=1 serves src/client/* to the pages instead of the
// copies embedded in build/ (for working on the client without a rebuild).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startHub } from '../scripts/launch/hub.mjs';
import { stateDir } from '../scripts/launch/state.mjs';
import { freePort } from '../scripts/launch/ports.mjs';
import { roomName, publish, range, WsClient, closeWsClients, wsUrl, waitFor } from './support.mjs';
import { startProxy } from './proxy.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = join(ROOT, 'test-results');
const WAIT_MS = 15000;
const FROM_SOURCE = process.env.CLIENT_FROM_SOURCE === '1';

// ---------------------------------------------------------------- tokens

const SECRET = `browser-secret-${randomBytes(12).toString('hex')}`;
const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const nowS = () => Math.floor(Date.now() / 1000);
function mint(over = {}) {
  const claims = { sub: 'alice', exp: nowS() + 600, rooms: ['*'], can: ['subscribe', 'publish'], ...over };
  const input = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}`;
  return `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
}

// ---------------------------------------------------------------- pages

async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // Pages fulfilled by page.route (CLIENT_FROM_SOURCE) count as public: let them reach loopback.
      '--disable-features=LocalNetworkAccessChecks'],
  });
}

async function serveSource(page) {
  if (!FROM_SOURCE) return;
  const file = (name) => readFileSync(join(ROOT, 'src/client', name), 'utf8');
  await page.route('**/client.js', (r) => r.fulfill({ contentType: 'text/javascript', body: file('client.js') }));
  await page.route(/\/(\?.*)?$/, (r) => r.fulfill({ contentType: 'text/html', body: file('demo.html') }));
}

/** Spies on every event listener the page adds and removes (for the leak test). */
function countListeners() {
  const live = new WeakMap();
  let count = 0;
  const add = EventTarget.prototype.addEventListener;
  const remove = EventTarget.prototype.removeEventListener;
  const key = (type, opts) => `${type}|${typeof opts === 'boolean' ? opts : Boolean(opts?.capture)}`;
  EventTarget.prototype.addEventListener = function (type, fn, opts) {
    if (!fn) return add.call(this, type, fn, opts);
    if (!live.has(this)) live.set(this, new Map());
    const m = live.get(this);
    const k = key(type, opts);
    if (!m.has(k)) m.set(k, new Map());
    const fns = m.get(k);
    if (fns.has(fn)) return undefined;
    let registered = fn;
    if (typeof opts === 'object' && opts?.once) {
      const target = this;
      registered = function (ev) {
        if (fns.delete(fn)) count -= 1;
        return typeof fn === 'function' ? fn.call(target, ev) : fn.handleEvent(ev);
      };
    }
    fns.set(fn, registered);
    count += 1;
    return add.call(this, type, registered, opts);
  };
  EventTarget.prototype.removeEventListener = function (type, fn, opts) {
    const fns = live.get(this)?.get(key(type, opts));
    const registered = fns?.get(fn);
    if (registered && fns.delete(fn)) count -= 1;
    return remove.call(this, type, registered ?? fn, opts);
  };
  window.listenerCount = () => count;
}

/** Opens a page on `origin` with window.t to drive /client.js and record what it tells. */
async function openPage(browser, origin, { spyListeners = false } = {}) {
  const page = await browser.newPage();
  page.errors = [];
  page.on('pageerror', (e) => {
    page.errors.push(e.message);
    console.error('page error:', e.message);
  });
  await serveSource(page);
  if (spyListeners) await page.addInitScript(countListeners);
  await page.goto(`${origin}/blank`); // a page on the hub's origin (a 404) that starts nothing itself
  await page.evaluate(async () => {
    const client = await import('/client.js');
    const t = { client, rooms: {}, seen: {}, statuses: {}, resets: {}, errors: {}, life: {}, opens: {}, app: {}, ts: {} };
    window.t = t;
    t.open = (name, url, options = {}) => {
      const o = { ...options };
      if (Array.isArray(o.tokens)) {
        // A token function: the next token of the list on each call (the last repeats).
        const list = o.tokens;
        let i = 0;
        t.tokenCalls = 0;
        o.token = async () => {
          t.tokenCalls += 1;
          return list[Math.min(i++, list.length - 1)];
        };
        delete o.tokens;
      }
      if (typeof o.tokenFrom === 'string') {
        // A token function served by the test (page.exposeFunction).
        const from = o.tokenFrom;
        t.tokenCalls = 0;
        o.token = () => {
          t.tokenCalls += 1;
          return window[from]();
        };
        delete o.tokenFrom;
      }
      const room = client.connect(url, o);
      t.rooms[name] = room;
      t.seen[name] = [];
      t.statuses[name] = [];
      t.resets[name] = [];
      t.errors[name] = [];
      t.opens[name] = [];
      t.ts[name] = [];
      room.on('message', (m) => t.seen[name].push({ id: m.id, event: m.event, data: m.data, from: m.from }));
      room.on('status', (s) => {
        t.statuses[name].push(`${s.transport}:${s.state}${s.error ? `:${s.error}` : ''}`);
        t.ts[name].push({ state: s.state, transport: s.transport, error: s.error, at: Date.now() });
      });
      room.on('reset', (r) => t.resets[name].push(r));
      room.on('error', (e) => t.errors[name].push({ code: e.code, status: e.status, message: e.message }));
      room.on('open', (o2) => t.opens[name].push(o2));
      return room;
    };
  });
  return page;
}

async function openRoom(page, name, url, options) {
  await page.evaluate(([n, u, o]) => {
    window.t.open(n, u, o);
  }, [name, url, options]);
  await waitState(page, name, 'open');
}

async function waitState(page, name, state, transport, ms = WAIT_MS) {
  try {
    await page.waitForFunction(
      ([n, s, tr]) => window.t.rooms[n].status.state === s && (!tr || window.t.rooms[n].status.transport === tr),
      [name, state, transport],
      { timeout: ms },
    );
  } catch (e) {
    const statuses = await page.evaluate((n) => window.t.statuses[n], name);
    throw new Error(`${name} never ${transport ?? ''}:${state}; statuses ${statuses.join(' ')}`);
  }
}

async function waitForIds(page, name, count, ms = WAIT_MS) {
  try {
    await page.waitForFunction(([n, c]) => window.t.seen[n].length >= c, [name, count], { timeout: ms });
  } catch (e) {
    const seen = await page.evaluate((n) => window.t.seen[n].map((m) => m.id), name);
    const statuses = await page.evaluate((n) => window.t.statuses[n], name);
    throw new Error(`${name}: wanted ${count} messages, saw ${seen}; statuses ${statuses.join(' ')}`);
  }
  return page.evaluate((n) => window.t.seen[n].map((m) => m.id), name);
}

const got = (page, what, name) => page.evaluate(([w, n]) => window.t[w][n], [what, name]);

/** Publishes `n` messages from the page at once; resolves to each one's outcome, in call order. */
function publishAll(page, name, items) {
  return page.evaluate(
    ([n, list]) =>
      Promise.all(
        list.map((data) =>
          window.t.rooms[n].publish(data).then(
            (id) => ({ id }),
            (e) => ({ error: e.code }),
          ),
        ),
      ),
    [name, items],
  );
}

async function storedMessages(hubUrl, room) {
  const res = await fetch(`${hubUrl}/rooms/${room}/messages?since=0&limit=1000`, {
    headers: room.startsWith('auth') ? { Authorization: `Bearer ${mint()}` } : {},
  });
  return (await res.json()).messages;
}

/** Whether the hub has the wire changes (welcome.limits, cid on errors, ...). */
/**
 * A hub (Miniflare, with `vars`), the loopback proxy in front of it and
 * Chromium, for one describe block: started before its first test (handed
 * to `assign`), stopped after its last.
 */
function browserSuite(vars, assign) {
  const started = {};
  before(async () => {
    started.hub = await startHub({ runtime: 'miniflare', vars });
    started.proxy = await startProxy(Number(new URL(started.hub.url).port));
    started.browser = await launch();
    assign(started);
  });
  after(async () => {
    await closeWsClients();
    await started.browser?.close();
    await started.proxy?.close();
    await started.hub?.stop();
  });
}

// ================================================================ transports and recovery

describe('the browser client in Chromium: transports, fallback and recovery', () => {
  let browser;
  let hub;
  let port;
  let state;
  let proxy;
  const vars = { RATE_PER_SEC: '0', HEARTBEAT_SECS: '1', HISTORY_LIMIT: '200' };
  const roomUrl = (name) => `${proxy.url}/rooms/${name}`;

  before(async () => {
    state = stateDir();
    port = await freePort();
    hub = await startHub({ runtime: 'miniflare', port, stateDir: state.dir, vars });
    proxy = await startProxy(port);
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    await proxy?.close();
    await hub?.stop();
    state?.cleanup();
  });

  test('two pages chat over WebSocket, with presence', async () => {
    const url = roomUrl(roomName('chat'));
    const a = await openPage(browser, proxy.url);
    const b = await openPage(browser, proxy.url);
    await openRoom(a, 'chat', url, { transport: 'ws' });
    await openRoom(b, 'chat', url, { transport: 'ws' });
    const idA = await a.evaluate(() => window.t.rooms.chat.publish({ text: 'hi from a' }));
    const idB = await b.evaluate(() => window.t.rooms.chat.publish({ text: 'hi from b' }));
    assert.deepEqual(await waitForIds(a, 'chat', 2), [idA, idB]);
    assert.deepEqual(await waitForIds(b, 'chat', 2), [idA, idB]);
    assert.ok((await got(a, 'statuses', 'chat')).includes('ws:open'));
    await a.waitForFunction(() => window.t.rooms.chat.presence.length === 2, null, { timeout: WAIT_MS });
    await a.close();
    await b.close();
  });

  test('an SSE page and a polling page see the same messages with the same ids', async () => {
    const name = roomName('mixed');
    const sse = await openPage(browser, proxy.url);
    const poll = await openPage(browser, proxy.url);
    await openRoom(sse, 'r', roomUrl(name), { transport: 'sse' });
    await openRoom(poll, 'r', roomUrl(name), { transport: 'poll' });
    const ids = [];
    ids.push(await sse.evaluate(() => window.t.rooms.r.publish('from sse page')));
    ids.push(await poll.evaluate(() => window.t.rooms.r.publish('from poll page')));
    ids.push((await publish(hub.url, name, { data: 'from http' })).body.id);
    assert.deepEqual(await waitForIds(sse, 'r', 3), ids);
    assert.deepEqual(await waitForIds(poll, 'r', 3), ids);
    await sse.close();
    await poll.close();
  });

  test('a WebSocket resume over a long history follows the replay batches (more) to the end, then gets live messages', async () => {
    const name = roomName('batches');
    const data = 'x'.repeat(60 * 1024);
    const ids = [];
    for (let i = 0; i < 20; i += 1) ids.push((await publish(hub.url, name, { data })).body.id); // ~1.2 MiB
    const page = await openPage(browser, proxy.url);
    await openRoom(page, 'r', roomUrl(name), { transport: 'ws', since: 0 });
    assert.deepEqual(await waitForIds(page, 'r', 20, 20_000), ids, 'every batch, in order');
    ids.push((await publish(hub.url, name, { data: 'live' })).body.id);
    assert.deepEqual(await waitForIds(page, 'r', 21), ids, 'then live');
    await page.close();
  });

  test('auto falls back to SSE when WebSockets are blocked, and returns to WebSocket once they pass again', async () => {
    const name = roomName('updown');
    proxy.block('ws');
    const page = await openPage(browser, proxy.url);
    try {
      await openRoom(page, 'r', roomUrl(name), { transport: 'auto', probeIntervalMs: 500 });
      assert.equal(await page.evaluate(() => window.t.rooms.r.transport), 'sse');
      const first = await page.evaluate(() => window.t.rooms.r.publish({ text: 'through the proxy' }));
      assert.deepEqual(await waitForIds(page, 'r', 1), [first]);
      // Probes keep failing quietly while blocked.
      await new Promise((r) => setTimeout(r, 1200));
      assert.equal(await page.evaluate(() => window.t.rooms.r.transport), 'sse');
      proxy.unblock('ws');
      await waitState(page, 'r', 'open', 'ws');
      // Messages around the switch: each once, in order.
      for (let i = 2; i <= 4; i += 1) await publish(hub.url, name, { data: i });
      const fromPage = await page.evaluate(() => window.t.rooms.r.publish('after the switch'));
      assert.deepEqual(await waitForIds(page, 'r', 5), range(first, fromPage));
      assert.equal(proxy.open('sse'), 0, 'the SSE stream was closed after the switch');
      assert.deepEqual(await got(page, 'errors', 'r'), []);
      const statuses = await got(page, 'statuses', 'r');
      assert.ok(statuses.indexOf('sse:open') < statuses.lastIndexOf('ws:open'), statuses.join(' '));
    } finally {
      proxy.unblock();
      await page.close();
    }
  });

  test('auto falls back when a working WebSocket becomes blocked, and a waiting publish settles once', async () => {
    const name = roomName('blocked-later');
    const page = await openPage(browser, proxy.url);
    try {
      await openRoom(page, 'r', roomUrl(name), { transport: 'auto', probeIntervalMs: 60000 });
      assert.equal(await page.evaluate(() => window.t.rooms.r.transport), 'ws');
      proxy.block('ws');
      proxy.drop('ws');
      const id = await page.evaluate(() => window.t.rooms.r.publish('while the socket is blocked'));
      await waitState(page, 'r', 'open', 'sse');
      assert.deepEqual(await waitForIds(page, 'r', 1), [id]);
      const stored = await storedMessages(hub.url, name);
      assert.deepEqual(stored.map((m) => m.data), ['while the socket is blocked'], 'stored once');
      assert.deepEqual(await got(page, 'errors', 'r'), []);
    } finally {
      proxy.unblock();
      await page.close();
    }
  });

  test('a hub unreachable at page load: auto connects over WebSocket once it is reachable, one status per retry', async () => {
    const name = roomName('down-at-load');
    const page = await openPage(browser, proxy.url);
    proxy.block('all');
    proxy.drop('all'); // the page's keep-alive connections too
    try {
      await page.evaluate((u) => window.t.open('r', u, { transport: 'auto', backoff: { baseMs: 200, capMs: 800 } }), roomUrl(name));
      await page.waitForFunction(() => window.t.statuses.r.length >= 4, null, { timeout: WAIT_MS }).catch(async () => {
        assert.fail(`statuses while unreachable: ${(await got(page, 'statuses', 'r')).join(' ')}`);
      });
      proxy.unblock('all');
      await waitState(page, 'r', 'open', 'ws');
      const statuses = await got(page, 'statuses', 'r');
      assert.ok(!statuses.some((s) => s.startsWith('poll') || s.startsWith('sse')), statuses.join(' '));
      const ts = await got(page, 'ts', 'r');
      for (let i = 1; i < ts.length; i += 1) {
        assert.ok(ts[i].state !== ts[i - 1].state || ts[i].at !== ts[i - 1].at, `two statuses at once: ${statuses.join(' ')}`);
      }
      assert.ok(statuses.some((s) => s.endsWith(':unreachable')), `status says why: ${statuses.join(' ')}`);
      assert.deepEqual(await got(page, 'errors', 'r'), []);
    } finally {
      proxy.unblock();
      await page.close();
    }
  });

  test('a stalled connection is detected within 3 heartbeats and resumed with nothing missed (WebSocket and SSE)', async () => {
    const name = roomName('stall');
    const page = await openPage(browser, proxy.url);
    try {
      await openRoom(page, 'ws', roomUrl(name), { transport: 'ws', pingIntervalMs: 1000 });
      await openRoom(page, 'sse', roomUrl(name), { transport: 'sse', heartbeatTimeoutMs: 3000 });
      await publish(hub.url, name, { data: 'before' });
      await waitForIds(page, 'ws', 1);
      await waitForIds(page, 'sse', 1);
      const stalledAt = Date.now();
      assert.ok(proxy.stall('all') >= 2);
      for (let i = 2; i <= 4; i += 1) await publish(hub.url, name, { data: `during ${i}` });
      for (const n of ['ws', 'sse']) {
        await page.waitForFunction((x) => window.t.ts[x].some((s) => s.state === 'reconnecting'), n, { timeout: 8000 });
        const ts = await got(page, 'ts', n);
        const detected = ts.find((s) => s.state === 'reconnecting').at - stalledAt;
        assert.ok(detected <= 4000, `${n} detected the stall after ${detected} ms (3 heartbeats = 3000 ms)`);
        assert.deepEqual(await waitForIds(page, n, 4), [1, 2, 3, 4], `${n} resumed`);
        await waitState(page, n, 'open');
        assert.deepEqual(await got(page, 'errors', n), []);
      }
    } finally {
      proxy.drop('all');
      await page.close();
    }
  });

  test('the browser coming back online reconnects at once instead of waiting for the backoff', async () => {
    const name = roomName('online');
    const page = await openPage(browser, proxy.url);
    try {
      await openRoom(page, 'r', roomUrl(name), { transport: 'ws', backoff: { baseMs: 60000, capMs: 60000 } });
      proxy.block('all');
      proxy.drop('all');
      // The first retry is at once; the one after it waits up to a minute.
      await page.waitForFunction(() => window.t.ts.r.filter((s) => s.state === 'reconnecting').length >= 2 && window.t.rooms.r.status.retryInMs > 3000, null, { timeout: WAIT_MS });
      proxy.unblock('all');
      const started = Date.now();
      await page.evaluate(() => window.dispatchEvent(new Event('online')));
      await waitState(page, 'r', 'open', 'ws', 5000);
      assert.ok(Date.now() - started < 5000);
      await publish(hub.url, name, { data: 'after' });
      assert.equal((await waitForIds(page, 'r', 1)).length, 1);
    } finally {
      proxy.unblock();
      await page.close();
    }
  });

  test("app events named 'status', 'error', 'open' or 'close' never reach lifecycle handlers", async () => {
    const name = roomName('spoof');
    const page = await openPage(browser, proxy.url);
    for (const transport of ['ws', 'sse', 'poll']) await openRoom(page, transport, roomUrl(name), { transport });
    await page.evaluate(() => {
      window.t.appEvents = { ws: [], sse: [], poll: [] };
      for (const n of ['ws', 'sse', 'poll']) {
        for (const ev of ['status', 'error', 'open', 'close', 'chat']) {
          window.t.rooms[n].on(`event:${ev}`, (m) => window.t.appEvents[n].push(`${m.event}:${m.data}`));
        }
      }
    });
    const sent = [];
    for (const event of ['status', 'error', 'open', 'close', 'chat']) {
      const res = await publish(hub.url, name, { event, data: `spoofed ${event}` });
      // The hub may refuse some names itself (reserved_event); what it stores must not spoof.
      if (res.status === 201) sent.push(`${event}:spoofed ${event}`);
      else assert.equal(res.body.error, 'reserved_event');
    }
    assert.ok(sent.includes('status:spoofed status') && sent.includes('chat:spoofed chat'));
    for (const n of ['ws', 'sse', 'poll']) {
      await waitForIds(page, n, sent.length);
      assert.deepEqual(await page.evaluate((x) => window.t.appEvents[x], n), sent, `${n}: app events by name`);
      const statuses = await got(page, 'statuses', n);
      assert.ok(statuses.every((s) => !s.includes('undefined')), `${n}: ${statuses.join(' ')}`);
      assert.deepEqual(await got(page, 'errors', n), [], `${n}: no error event from app data`);
      assert.equal((await got(page, 'opens', n)).length, 1, `${n}: one open event`);
      assert.equal(await page.evaluate((x) => window.t.rooms[x].status.state, n), 'open');
    }
    const refused = await page.evaluate(() => window.t.rooms.ws.publish('x', { event: 'error' }).then(() => 'stored', (e) => e.code));
    assert.equal(refused, 'reserved_event');
    await page.close();
  });

  test('listener counts stay flat over 60 poll cycles (a minute of polling at 1/s) and 50 publishes with AbortSignals', async () => {
    const name = roomName('leaks');
    const page = await openPage(browser, proxy.url, { spyListeners: true });
    let polls = 0;
    page.on('request', (r) => {
      if (r.url().includes(`/rooms/${name}/messages?`)) polls += 1;
    });
    await openRoom(page, 'r', roomUrl(name), { transport: 'poll', pollIntervalMs: 30 });
    await waitFor(() => polls >= 10, WAIT_MS, '10 polls');
    const early = await page.evaluate(() => window.listenerCount());
    await page.evaluate(async () => {
      const c = new AbortController();
      for (let i = 0; i < 50; i += 1) await window.t.rooms.r.publish(i, { signal: c.signal });
    });
    await waitFor(() => polls >= 70, 30000, '70 polls', () => ` (${polls})`);
    const late = await page.evaluate(() => window.listenerCount());
    assert.equal(late, early, `listeners after 10 polls: ${early}, after ${polls}: ${late}`);
    assert.equal((await waitForIds(page, 'r', 50)).length, 50);
    await page.close();
  });

  test('API: ready, once/off, reconnect(), publish timeout and AbortSignal, resume across reloads', async () => {
    const name = roomName('api');
    const page = await openPage(browser, proxy.url);
    const result = await page.evaluate(async (u) => {
      const out = {};
      const room = window.t.open('r', u, { transport: 'ws', resume: 'session', since: 0 });
      await room.ready;
      out.readyTransport = room.transport;
      let onceCalls = 0;
      room.once('message', () => (onceCalls += 1));
      const counter = () => (out.offCalls = (out.offCalls ?? 0) + 1);
      room.on('message', counter);
      room.off('message', counter);
      const next = room.once('message');
      await room.publish('one');
      out.next = (await next).data;
      // The ack comes before the message: wait for the message too, so the
      // cursor is 2 before the reconnect and the reload below.
      const second = room.once('message');
      await room.publish('two');
      await second;
      out.onceCalls = onceCalls;
      out.offCalls = out.offCalls ?? 0;
      const opened = room.once('open');
      room.reconnect();
      out.reopened = await opened;
      return out;
    }, roomUrl(name));
    assert.deepEqual(result, { readyTransport: 'ws', next: 'one', onceCalls: 1, offCalls: 0, reopened: { transport: 'ws', resumed: true } });
    // While the hub cannot answer: a publish times out, another is aborted.
    proxy.stall('ws');
    const settled = await page.evaluate(async () => {
      const room = window.t.rooms.r;
      const ctl = new AbortController();
      const aborted = room.publish('never', { signal: ctl.signal }).catch((e) => e.code);
      setTimeout(() => ctl.abort(), 100);
      return [await room.publish('slow', { timeoutMs: 300 }).catch((e) => e.code), await aborted];
    });
    assert.deepEqual(settled, ['timeout', 'aborted']);
    // resume: 'session' keeps lastId across a reload: only what is new arrives.
    const before = await page.evaluate(() => window.t.rooms.r.lastId);
    await page.reload();
    await page.evaluate(async (path) => {
      const client = await import('/client.js');
      window.t2 = { seen: [] };
      window.t2.room = client.connect(location.origin + path, { transport: 'sse', resume: 'session', since: 0 });
      window.t2.room.on('message', (m) => window.t2.seen.push(m.id));
      await window.t2.room.ready;
    }, `/rooms/${name}`);
    assert.equal(await page.evaluate(() => window.t2.room.lastId), before);
    const id = (await publish(hub.url, name, { data: 'new' })).body.id;
    await page.waitForFunction(() => window.t2.seen.length >= 1, null, { timeout: WAIT_MS });
    assert.deepEqual(await page.evaluate(() => window.t2.seen), [id]);
    proxy.drop('all');
    await page.close();
  });

  test('a hub restart mid-session: every page reconnects and sees every message once, in order', async () => {
    const name = roomName('restart');
    const pages = {};
    for (const transport of ['ws', 'sse', 'poll']) {
      pages[transport] = await openPage(browser, proxy.url);
      await openRoom(pages[transport], 'r', roomUrl(name), { transport, backoff: { baseMs: 200, capMs: 1000 } });
    }
    for (let i = 1; i <= 3; i += 1) await publish(hub.url, name, { data: `before ${i}` });
    for (const page of Object.values(pages)) assert.deepEqual(await waitForIds(page, 'r', 3), [1, 2, 3]);

    await hub.stop();
    // While the hub is down, a page publishes: its publish must land once.
    const pending = pages.ws.evaluate(() => window.t.rooms.r.publish('sent while down'));
    hub = await startHub({ runtime: 'miniflare', port, stateDir: state.dir, vars });
    for (let i = 5; i <= 6; i += 1) await publish(hub.url, name, { data: `after ${i}` });
    const pendingId = await pending;

    const expected = range(1, 6);
    for (const [transport, page] of Object.entries(pages)) {
      const ids = await waitForIds(page, 'r', 6);
      assert.deepEqual(ids, expected, `${transport} saw ${ids}`);
      const statuses = await got(page, 'statuses', 'r');
      assert.ok(statuses.some((s) => s.includes(':reconnecting')), `${transport}: ${statuses.join()}`);
      assert.deepEqual(await got(page, 'resets', 'r'), []);
    }
    assert.ok(expected.includes(pendingId));
    const stored = await storedMessages(hub.url, name);
    assert.deepEqual(stored.map((m) => m.id), expected, 'nothing stored twice');
    for (const page of Object.values(pages)) await page.close();
  });

  test('cursor_ahead: after the hub lost its storage, every transport resyncs once and delivers the new log from id 1', async () => {
    const name = roomName('wiped');
    const pages = {};
    for (const transport of ['ws', 'sse', 'poll']) {
      pages[transport] = await openPage(browser, proxy.url);
      await openRoom(pages[transport], 'r', roomUrl(name), { transport, pollIntervalMs: transport === 'poll' ? 200 : undefined, backoff: { baseMs: 200, capMs: 1000 } });
    }
    for (let i = 1; i <= 5; i += 1) await publish(hub.url, name, { data: `old ${i}` });
    for (const page of Object.values(pages)) await waitForIds(page, 'r', 5);

    // The same hub, on new storage (a wiped development state).
    await hub.stop();
    const fresh = stateDir();
    hub = await startHub({ runtime: 'miniflare', port, stateDir: fresh.dir, vars });
    try {
      for (let i = 1; i <= 2; i += 1) await publish(hub.url, name, { data: `new ${i}` });
      for (const [transport, page] of Object.entries(pages)) {
        await page.waitForFunction(() => window.t.seen.r.length >= 7, null, { timeout: WAIT_MS }).catch(() => {});
        const seen = await got(page, 'seen', 'r');
        assert.deepEqual(seen.map((m) => `${m.id}:${m.data}`), ['1:old 1', '2:old 2', '3:old 3', '4:old 4', '5:old 5', '1:new 1', '2:new 2'], transport);
        assert.equal(await page.evaluate(() => window.t.rooms.r.lastId), 2, transport);
      }
      // A while later: still one reset each (the poll transport does not repeat it).
      await new Promise((r) => setTimeout(r, 1500));
      for (const [transport, page] of Object.entries(pages)) {
        assert.deepEqual(await got(page, 'resets', 'r'), [{ reason: 'cursor_ahead', first_id: 1 }], transport);
      }
      const id = (await publish(hub.url, name, { data: 'new 3' })).body.id;
      for (const page of Object.values(pages)) assert.equal((await waitForIds(page, 'r', 8)).at(-1), id);
    } finally {
      for (const page of Object.values(pages)) await page.close();
      // Back on the suite's storage for the tests after this one.
      await hub.stop();
      fresh.cleanup();
      hub = await startHub({ runtime: 'miniflare', port, stateDir: state.dir, vars });
    }
  });

  test('the demo page stays usable with 500 messages, and is captured in test-results/demo.png', async () => {
    const name = roomName('demo');
    for (let i = 1; i <= 500; i += 1) await publish(hub.url, name, { data: { text: `message ${i}` } });
    const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    await serveSource(page);
    const errors = [];
    const missing = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('response', (r) => r.status() === 404 && missing.push(r.url()));
    await page.goto(`${proxy.url}/?room=${name}`);
    await page.waitForFunction(() => ['chat', 'feed', 'poll'].every((w) => window.hubDemo?.[w]?.status.state === 'open'), null, { timeout: WAIT_MS });
    await page.fill('#chat input', 'hello from the chat');
    await page.press('#chat input', 'Enter');
    await page.fill('#feed input', 'breaking: the feed works');
    await page.click('#feed button');
    await page.waitForFunction(() => [...document.querySelectorAll('#chat li')].some((li) => li.textContent.includes('breaking')), null, { timeout: WAIT_MS });
    await page.waitForFunction(() => [...document.querySelectorAll('#feed li')].some((li) => li.textContent.includes('hello from the chat')), null, { timeout: WAIT_MS });
    await page.waitForFunction(() => document.querySelector('#poll [data-last]').textContent.includes('breaking'), null, { timeout: WAIT_MS });
    const badges = await page.$$eval('[data-status]', (els) => els.map((e) => e.textContent));
    assert.deepEqual(badges, ['ws · open', 'sse · open', 'poll · open']);
    const signals = await page.$$eval('li.signal', (els) => els.map((e) => e.textContent));
    assert.deepEqual(signals, [], 'no "missed messages" line on load');
    const counts = await page.$$eval('[data-list]', (els) => els.map((e) => e.children.length));
    assert.ok(counts.every((c) => c > 0 && c <= 200), `list lengths ${counts}`);
    const box = await page.locator('#chat form').boundingBox();
    assert.ok(box && box.y + box.height <= 720, `the send box is on screen: ${JSON.stringify(box)}`);
    assert.deepEqual(errors, []);
    assert.deepEqual(missing, [], 'no 404 (favicon)');
    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: join(RESULTS, 'demo.png'), fullPage: true });
    await page.close();
  });
});

// ================================================================ publishes under a rate limit

describe('the browser client in Chromium: publishes under a rate limit (2/s, burst 3)', () => {
  let browser;
  let hub;
  let proxy;
  const roomUrl = (name) => `${proxy.url}/rooms/${name}`;
  browserSuite({ RATE_PER_SEC: '2', RATE_BURST: '3', MAX_MESSAGE_BYTES: '2048', HEARTBEAT_SECS: '1' }, (started) => {
    ({ browser, hub, proxy } = started);
  });

  async function checkSettled(name, page, outcomes, items) {
    assert.equal(outcomes.length, items.length);
    for (const o of outcomes) assert.ok(Number.isInteger(o.id), `every publish resolves: ${JSON.stringify(outcomes)}`);
    const ids = outcomes.map((o) => o.id);
    assert.equal(new Set(ids).size, ids.length, `distinct ids ${ids}`);
    const stored = await storedMessages(hub.url, name);
    assert.equal(stored.length, items.length, 'each stored once');
    const byId = new Map(stored.map((m) => [m.id, m.data]));
    outcomes.forEach((o, i) => assert.deepEqual(byId.get(o.id), items[i], `publish ${i} resolved to its own message`));
    assert.deepEqual(await got(page, 'errors', 'r'), [], 'no error events');
    const statuses = await got(page, 'statuses', 'r');
    assert.ok(!statuses.some((s) => s.includes(':closed')), `never closed: ${statuses.join(' ')}`);
  }

  test('8 publishes in flight each settle once, with their own id', async () => {
    const name = roomName('burst');
    const page = await openPage(browser, proxy.url);
    await openRoom(page, 'r', roomUrl(name), { transport: 'ws' });
    const items = range(1, 8).map((i) => ({ n: i }));
    const started = Date.now();
    const outcomes = await publishAll(page, 'r', items);
    await checkSettled(name, page, outcomes, items);
    assert.ok(Date.now() - started < 12000);
    await page.close();
  });

  test('a cursor stream at 3x the rate for 3 s: every publish settles, the page is never closed', async () => {
    const name = roomName('stream');
    const page = await openPage(browser, proxy.url);
    await openRoom(page, 'r', roomUrl(name), { transport: 'ws' });
    const outcomes = await page.evaluate(async () => {
      const room = window.t.rooms.r;
      const promises = [];
      for (let i = 0; i < 18; i += 1) {
        promises.push(room.publish({ x: i }).then((id) => ({ id }), (e) => ({ error: e.code })));
        await new Promise((r) => setTimeout(r, 1000 / 6));
      }
      return Promise.all(promises);
    });
    await checkSettled(name, page, outcomes, range(0, 17).map((x) => ({ x })));
    await page.close();
  });

  test('publishes in flight across a dropped connection each settle once; nothing is stored twice', async () => {
    const name = roomName('drop');
    const page = await openPage(browser, proxy.url);
    await openRoom(page, 'r', roomUrl(name), { transport: 'ws', backoff: { baseMs: 100, capMs: 500 } });
    const items = range(1, 8).map((i) => ({ n: i }));
    const all = publishAll(page, 'r', items);
    await waitFor(async () => (await storedMessages(hub.url, name)).length >= 1, WAIT_MS, 'a first stored publish');
    assert.ok(proxy.drop('ws') >= 1);
    const outcomes = await all;
    await checkSettled(name, page, outcomes, items);
    assert.ok((await got(page, 'statuses', 'r')).some((s) => s.includes(':reconnecting')));
    await page.close();
  });

  test('an error answers its own publish: a message over the limit is refused, the small ones beside it are stored', async () => {
    const name = roomName('too-large');
    const page = await openPage(browser, proxy.url);
    await openRoom(page, 'r', roomUrl(name), { transport: 'ws', backoff: { baseMs: 100, capMs: 500 } });
    const outcomes = await publishAll(page, 'r', ['small 1', 'x'.repeat(4000), 'small 2']);
    assert.equal(outcomes[1].error, 'too_large', JSON.stringify(outcomes));
    assert.ok(Number.isInteger(outcomes[0].id) && Number.isInteger(outcomes[2].id), JSON.stringify(outcomes));
    const stored = await storedMessages(hub.url, name);
    assert.deepEqual(stored.map((m) => m.data), ['small 1', 'small 2']);
    await page.close();
  });

  test('an oversized publish is refused before it is sent, from welcome.limits', async () => {
    const name = roomName('limits');
    const page = await openPage(browser, proxy.url);
    await openRoom(page, 'r', roomUrl(name), { transport: 'ws' });
    const limits = await page.evaluate(() => window.t.rooms.r.limits);
    assert.deepEqual(limits, { max_message_bytes: 2048, rate_per_sec: 2, rate_burst: 3 });
    const out = await publishAll(page, 'r', ['x'.repeat(4000)]);
    assert.deepEqual(out, [{ error: 'too_large' }]);
    const statuses = await got(page, 'statuses', 'r');
    assert.ok(!statuses.some((s) => s.includes('reconnecting')), 'the socket was not closed for it');
    await page.close();
  });
});

// ================================================================ failures that are told

describe('the browser client in Chromium: expired tokens, 403 and 429 are told once', () => {
  let browser;
  let hub;
  let proxy;
  const roomUrl = (name) => `${proxy.url}/rooms/${name}`;
  browserSuite({ HUB_SECRET: SECRET, TOKEN_LEEWAY_SECS: '0', RATE_PER_SEC: '0', MAX_CONNECTIONS_PER_USER: '1', HEARTBEAT_SECS: '1' }, (started) => {
    ({ browser, hub, proxy } = started);
  });

  const expired = () => mint({ exp: nowS() - 60 });

  for (const transport of ['ws', 'sse', 'poll', 'auto']) {
    test(`${transport}: an expired token ends in one 'unauthorized' error and status closed; a token function refreshes instead`, async () => {
      const name = roomName('auth-expired');
      const page = await openPage(browser, proxy.url);
      await page.evaluate(([u, tr, tok]) => window.t.open('r', u, { transport: tr, token: tok }), [roomUrl(name), transport, expired()]);
      await waitState(page, 'r', 'closed');
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual((await got(page, 'errors', 'r')).map((e) => [e.code, e.status]), [['unauthorized', 401]]);
      const status = await page.evaluate(() => window.t.rooms.r.status);
      assert.equal(status.state, 'closed');
      assert.equal(status.error, 'unauthorized');
      assert.equal(await page.evaluate(() => window.t.rooms.r.publish('x').catch((e) => e.code)), 'closed');
      // With a token function: the expired token is replaced, nothing to tell.
      await page.evaluate(([u, tr, toks]) => window.t.open('f', u, { transport: tr, tokens: toks }), [roomUrl(name), transport, [expired(), mint()]]);
      await waitState(page, 'f', 'open');
      assert.deepEqual(await got(page, 'errors', 'f'), []);
      assert.ok((await page.evaluate(() => window.t.tokenCalls)) >= 2);
      const id = await page.evaluate(() => window.t.rooms.f.publish('with a fresh token'));
      assert.deepEqual(await waitForIds(page, 'f', 1), [id]);
      await page.close();
    });
  }

  test('a token that expires mid-session: the hub ends the socket, a token function refreshes it; a string token is told token_expired', async () => {
    const name = roomName('auth-midway');
    const page = await openPage(browser, proxy.url);
    // Both short tokens end at `exp`, at least 3 s away: opening two rooms
    // on a loaded machine must not outlast them (with `nowS() + 2` it
    // could be 1 s, and a slow CI open failed). Then wait until past it.
    const exp = nowS() + 4;
    const short = mint({ exp });
    await openRoom(page, 's', roomUrl(name), { transport: 'ws', token: short, backoff: { baseMs: 100, capMs: 300 } });
    await openRoom(page, 'f', roomUrl(name), { transport: 'ws', tokens: [mint({ sub: 'bob', exp }), mint({ sub: 'bob' })], backoff: { baseMs: 100, capMs: 300 } });
    await new Promise((r) => setTimeout(r, Math.max(0, exp * 1000 + 1100 - Date.now())));
    proxy.drop('ws');
    await waitState(page, 's', 'closed');
    assert.deepEqual((await got(page, 'errors', 's')).map((e) => e.code), ['token_expired']);
    await page.waitForFunction(() => window.t.ts.f.some((s) => s.state === 'reconnecting'), null, { timeout: WAIT_MS });
    await waitState(page, 'f', 'open');
    assert.deepEqual(await got(page, 'errors', 'f'), []);
    await page.close();
  });

  for (const transport of ['ws', 'auto']) {
    test(`${transport}: a room the token does not grant ends in one 'forbidden' error and status closed`, async () => {
      const name = roomName('auth-forbidden');
      const page = await openPage(browser, proxy.url);
      await page.evaluate(([u, tr, tok]) => window.t.open('r', u, { transport: tr, token: tok }), [roomUrl(name), transport, mint({ rooms: ['elsewhere'] })]);
      await waitState(page, 'r', 'closed');
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual((await got(page, 'errors', 'r')).map((e) => [e.code, e.status]), [['forbidden', 403]]);
      assert.equal(await page.evaluate(() => window.t.rooms.r.status.error), 'forbidden');
      await page.close();
    });
  }

  async function tooMany(transport) {
    const name = roomName('auth-429');
    const token = mint({ sub: `carol-${transport}` });
    // The user's one connection is taken.
    const holder = await WsClient.connect(wsUrl(hub.url, name), { headers: { Authorization: `Bearer ${token}` } });
    await holder.nextType('welcome');
    const page = await openPage(browser, proxy.url);
    await page.evaluate(([u, tr, tok]) => window.t.open('r', u, { transport: tr, token: tok, backoff: { baseMs: 200, capMs: 1000 } }), [roomUrl(name), transport, token]);
    await page.waitForFunction(() => window.t.errors.r.length >= 1, null, { timeout: WAIT_MS });
    const status = await page.evaluate(() => window.t.rooms.r.status);
    assert.equal(status.state, 'reconnecting');
    assert.equal(status.error, 'too_many_connections');
    // It keeps trying (after Retry-After) without telling again; then the slot frees up.
    await new Promise((r) => setTimeout(r, 1500));
    await holder.close();
    await waitState(page, 'r', 'open', undefined, 20000);
    assert.deepEqual((await got(page, 'errors', 'r')).map((e) => [e.code, e.status]), [['too_many_connections', 429]]);
    await page.close();
  }

  test("auto: '429 too_many_connections' is told once, with the status saying why, and it connects when a slot frees", async () => {
    await tooMany('auto');
  });

  test("ws: a refused upgrade's 429 is learnt from GET /rooms/{room} and told once", async () => {
    await tooMany('ws');
  });
});

// ================================================================ tokens over time

describe('the browser client in Chromium: short-lived tokens from a token function', () => {
  let browser;
  let hub;
  let proxy;
  const roomUrl = (name) => `${proxy.url}/rooms/${name}`;
  browserSuite({ HUB_SECRET: SECRET, TOKEN_LEEWAY_SECS: '0', RATE_PER_SEC: '0', HEARTBEAT_SECS: '1' }, (started) => {
    ({ browser, hub, proxy } = started);
  });

  for (const transport of ['ws', 'sse']) {
    test(`${transport}: every message arrives once and in order across several token expiries; no token in a URL`, async () => {
      const name = roomName(`renew-${transport}`);
      const page = await openPage(browser, proxy.url);
      const urls = [];
      page.on('request', (r) => urls.push(r.url()));
      page.on('websocket', (w) => urls.push(w.url()));
      let minted = 0;
      await page.exposeFunction('shortToken', () => {
        minted += 1;
        return mint({ sub: 'renewer', exp: nowS() + 3, can: ['subscribe'] });
      });
      await page.evaluate(([u, tr]) => window.t.open('r', u, { transport: tr, tokenFrom: 'shortToken' }), [roomUrl(name), transport]);
      await waitState(page, 'r', 'open');
      const ids = [];
      const until = Date.now() + 11_000;
      while (Date.now() < until) {
        const res = await publish(hub.url, name, { data: ids.length }, { Authorization: `Bearer ${mint()}` });
        ids.push(res.body.id);
        await new Promise((r) => setTimeout(r, 250));
      }
      assert.deepEqual(await waitForIds(page, 'r', ids.length, 15_000), ids, 'every message once, in order');
      assert.ok(minted >= 4, `${minted} tokens for ~4 expiries`);
      const statuses = await got(page, 'statuses', 'r');
      assert.ok(!statuses.some((st) => st.endsWith(':closed')), `never closed: ${statuses.join(' ')}`);
      assert.ok(statuses.filter((st) => st.endsWith(':open')).length >= 3, `reconnected after each expiry: ${statuses.join(' ')}`);
      assert.deepEqual(page.errors, []);
      assert.ok(!urls.some((u) => u.includes('token=')), `no token in any URL: ${urls.filter((u) => u.includes('token='))}`);
      await page.close();
    });
  }
});
