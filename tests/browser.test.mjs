// The browser client (/client.js) and the demo page, in a real headless
// Chromium driven by playwright-core: chat over WebSocket between pages,
// SSE and polling pages seeing the same ids, fallback to SSE behind a
// proxy that strips WebSocket upgrades, a hub restart mid-session with
// every page ending with every message exactly once, in order, and a
// screenshot of the demo in test-results/demo.png.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startHub, stateDir, roomName, publish, freePort } from './harness.mjs';
import { range } from './support.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const RESULTS = join(dirname(fileURLToPath(import.meta.url)), '..', 'test-results');
const WAIT_MS = 15000;

/** Opens a page on the hub's origin with helpers to drive /client.js. */
async function openPage(browser, origin) {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.error('page error:', e.message));
  // The demo page is on the hub's origin; the test rooms live beside it.
  await page.goto(`${origin}/?room=${roomName('demo-idle')}`);
  await page.evaluate(async () => {
    const client = await import('/client.js');
    window.t = { client, rooms: {}, seen: {}, statuses: {}, resets: {} };
    window.t.open = (name, url, options) => {
      const room = client.connect(url, options);
      window.t.rooms[name] = room;
      window.t.seen[name] = [];
      window.t.statuses[name] = [];
      window.t.resets[name] = [];
      room.on('message', (m) => window.t.seen[name].push({ id: m.id, data: m.data, from: m.from }));
      room.on('status', (s) => window.t.statuses[name].push(`${s.transport}:${s.state}`));
      room.on('reset', (r) => window.t.resets[name].push(r));
    };
  });
  return page;
}

async function openRoom(page, name, url, options) {
  await page.evaluate(([n, u, o]) => window.t.open(n, u, o), [name, url, options]);
  await page.waitForFunction((n) => window.t.rooms[n].status.state === 'open', name, { timeout: WAIT_MS });
}

async function waitForIds(page, name, count) {
  await page.waitForFunction(([n, c]) => window.t.seen[n].length >= c, [name, count], { timeout: WAIT_MS });
  return page.evaluate((n) => window.t.seen[n].map((m) => m.id), name);
}

/** A proxy like a corporate one that strips WebSocket upgrades. */
function startUpgradeStrippingProxy(targetPort) {
  const server = http.createServer((req, res) => {
    const upstream = http.request(
      { host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.on('upgrade', (_req, socket) => socket.destroy());
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

describe('the browser client in Chromium', () => {
  let browser;
  let hub;
  let port;
  let state;

  before(async () => {
    state = stateDir();
    port = await freePort();
    hub = await startHub({ port, persistDir: state.dir, vars: { RATE_PER_SEC: '0' } });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });

  after(async () => {
    await browser?.close();
    await hub?.stop();
    state?.cleanup();
  });

  test('two pages chat over WebSocket', async () => {
    const url = `${hub.url}/rooms/${roomName('chat')}`;
    const a = await openPage(browser, hub.url);
    const b = await openPage(browser, hub.url);
    await openRoom(a, 'chat', url, { transport: 'ws' });
    await openRoom(b, 'chat', url, { transport: 'ws' });
    const idA = await a.evaluate(() => window.t.rooms.chat.publish({ text: 'hi from a' }));
    const idB = await b.evaluate(() => window.t.rooms.chat.publish({ text: 'hi from b' }));
    assert.deepEqual(await waitForIds(a, 'chat', 2), [idA, idB]);
    assert.deepEqual(await waitForIds(b, 'chat', 2), [idA, idB]);
    const statuses = await a.evaluate(() => window.t.statuses.chat);
    assert.ok(statuses.includes('ws:open'), statuses.join());
    const presence = await a.evaluate(() => window.t.rooms.chat.presence);
    assert.equal(presence.length, 2, `presence: ${presence}`);
    await a.close();
    await b.close();
  });

  test('an SSE page and a polling page see the same messages with the same ids', async () => {
    const url = `${hub.url}/rooms/${roomName('mixed')}`;
    const sse = await openPage(browser, hub.url);
    const poll = await openPage(browser, hub.url);
    await openRoom(sse, 'r', url, { transport: 'sse' });
    await openRoom(poll, 'r', url, { transport: 'poll' });
    const ids = [];
    ids.push(await sse.evaluate(() => window.t.rooms.r.publish('from sse page')));
    ids.push(await poll.evaluate(() => window.t.rooms.r.publish('from poll page')));
    ids.push((await publish(hub.url, url.split('/rooms/')[1], { data: 'from http' })).body.id);
    assert.deepEqual(await waitForIds(sse, 'r', 3), ids);
    assert.deepEqual(await waitForIds(poll, 'r', 3), ids);
    assert.equal(await sse.evaluate(() => window.t.rooms.r.transport), 'sse');
    assert.equal(await poll.evaluate(() => window.t.rooms.r.transport), 'poll');
    await sse.close();
    await poll.close();
  });

  test('with WebSockets blocked by a proxy, auto falls back to SSE and still publishes', async () => {
    const proxy = await startUpgradeStrippingProxy(port);
    const origin = `http://127.0.0.1:${proxy.address().port}`;
    try {
      const name = roomName('fallback');
      const page = await openPage(browser, origin);
      await openRoom(page, 'r', `${origin}/rooms/${name}`, { transport: 'auto' });
      assert.equal(await page.evaluate(() => window.t.rooms.r.transport), 'sse');
      const id = await page.evaluate(() => window.t.rooms.r.publish({ text: 'through the proxy' }));
      assert.deepEqual(await waitForIds(page, 'r', 1), [id]);
      const statuses = await page.evaluate(() => window.t.statuses.r);
      assert.ok(statuses.includes('sse:open') && !statuses.includes('ws:open'), statuses.join());
      await page.close();
    } finally {
      proxy.closeAllConnections();
      await new Promise((resolve) => proxy.close(resolve));
    }
  });

  test('a hub restart mid-session: every page reconnects and sees every message once, in order', async () => {
    const name = roomName('restart');
    const url = `${hub.url}/rooms/${name}`;
    const pages = {};
    for (const transport of ['ws', 'sse', 'poll']) {
      pages[transport] = await openPage(browser, hub.url);
      await openRoom(pages[transport], 'r', url, { transport });
    }
    for (let i = 1; i <= 3; i += 1) await publish(hub.url, name, { data: `before ${i}` });
    for (const page of Object.values(pages)) assert.deepEqual(await waitForIds(page, 'r', 3), [1, 2, 3]);

    await hub.stop();
    // While the hub is down, a page publishes: its publish must land once.
    const pending = pages.ws.evaluate(() => window.t.rooms.r.publish('sent while down'));
    hub = await startHub({ port, persistDir: state.dir, vars: { RATE_PER_SEC: '0' } });
    for (let i = 5; i <= 6; i += 1) await publish(hub.url, name, { data: `after ${i}` });
    const pendingId = await pending;

    const expected = range(1, 6);
    for (const [transport, page] of Object.entries(pages)) {
      const ids = await waitForIds(page, 'r', 6);
      assert.deepEqual(ids, expected, `${transport} saw ${ids}`);
      const statuses = await page.evaluate(() => window.t.statuses.r);
      assert.ok(statuses.some((s) => s.endsWith(':reconnecting')), `${transport}: ${statuses.join()}`);
      assert.deepEqual(await page.evaluate(() => window.t.resets.r), []);
    }
    assert.ok(expected.includes(pendingId));
    const stored = await (await fetch(`${hub.url}/rooms/${name}/messages?since=0`)).json();
    assert.deepEqual(stored.messages.map((m) => m.id), expected, 'nothing stored twice');
    for (const page of Object.values(pages)) await page.close();
  });

  test('the demo page works for a person and is captured in test-results/demo.png', async () => {
    const name = roomName('demo');
    const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    await page.goto(`${hub.url}/?room=${name}`);
    await page.waitForFunction(
      () => ['chat', 'feed', 'poll'].every((w) => window.hubDemo?.[w]?.status.state === 'open'),
      null,
      { timeout: WAIT_MS },
    );
    await page.fill('#chat input', 'hello from the chat');
    await page.press('#chat input', 'Enter');
    await page.fill('#feed input', 'breaking: the feed works');
    await page.click('#feed button');
    await page.waitForFunction(() => document.querySelectorAll('#chat li').length >= 2, null, { timeout: WAIT_MS });
    await page.waitForFunction(() => document.querySelectorAll('#feed li').length >= 2, null, { timeout: WAIT_MS });
    await page.waitForFunction(() => document.querySelector('#poll [data-count]').textContent === '2', null, {
      timeout: WAIT_MS,
    });
    const badges = await page.$$eval('[data-status]', (els) => els.map((e) => e.textContent));
    assert.deepEqual(badges, ['ws · open', 'sse · open', 'poll · open']);
    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: join(RESULTS, 'demo.png'), fullPage: true });
    await page.close();
  });
});
