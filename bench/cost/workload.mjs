// One measured workload: `users` clients of one transport in each of
// `rooms` rooms of a running hub, the app's backend publishing to every
// room at `updatesPerMin` over HTTP, for `secs` seconds; returns what the
// rooms' meters (GET /rooms/{room}, "stats" and "usage") and the workerd
// process counted in that window.
//
// Transports (what a client does all the window):
//   ws        one WebSocket, opened before the window; sends nothing
//   sse       one SSE stream, opened before the window
//   poll      GET /messages?since=<last id> with If-None-Match every
//             `pollSecs` (each poller at its own phase of the interval)
//   longpoll  GET /messages?since=<last id>&wait=<wait> with If-None-Match,
//             sent again as soon as it is answered
//
// Accounting: the window starts after every client is connected (setup is
// not in it: WebSocket and SSE users are assumed connected all month) and
// is bounded by two meter readings. The end reading is itself a request
// that reads and writes rows (it saves the counters); its cost, measured on
// a room of its own with nothing else going on, is taken off. Worker
// requests are the requests that reached the room: in this workload every
// one of them came through the Worker, and the Worker answered nothing by
// itself. CPU is the workerd process's user + system time from /proc (the
// Worker and the Durable Objects together: the meter does not see CPU).
//
// Invariants: loopback only; every request, connect and wait has a
// timeout; every client opened here is closed before it returns.
import http from 'node:http';
import { cpuMs } from '../harness.mjs';
import { openSocket } from '../../scripts/clients/ws.mjs';
import { readSse } from '../../scripts/clients/sse.mjs';

export const TRANSPORTS = ['ws', 'sse', 'poll', 'longpoll'];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A JSON request on loopback with a deadline; resolves { status, headers, body }. */
function request(agent, url, { method = 'GET', headers = {}, body, timeoutMs = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent, headers, timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: text }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** GET /rooms/{room}: the room's state with its stats and usage. */
export async function readMeter(agent, base, room) {
  const r = await request(agent, `${base}/rooms/${room}`);
  if (r.status !== 200) throw new Error(`GET /rooms/${room}: ${r.status} ${r.body.slice(0, 200)}`);
  return JSON.parse(r.body);
}

/** A dashboard update as an app's backend would send it (~100 bytes of JSON). */
function update(seq) {
  return JSON.stringify({ event: 'metrics', data: { seq, cpu: 0.42, rps: 1234, p99_ms: 87, region: 'eu-west' } });
}

async function publish(agent, base, room, seq) {
  const r = await request(agent, `${base}/rooms/${room}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: update(seq),
  });
  if (r.status !== 201) throw new Error(`publish to ${room}: ${r.status} ${r.body.slice(0, 200)}`);
  return JSON.parse(r.body).id;
}

/** The counters a window is the difference of: usage, delivered messages, bytes. */
function flat(state) {
  const u = state.usage;
  const s = state.stats;
  return {
    requests: u.requests,
    wsMessagesIn: u.ws_messages_in,
    alarms: u.alarms,
    awakeMs: u.awake_ms,
    streamMs: u.stream_ms,
    rowsRead: u.rows_read,
    rowsWritten: u.rows_written,
    published: s.published,
    delivered: s.delivered.ws + s.delivered.sse + s.delivered.poll,
    bytesOut: s.bytes_out,
  };
}
const minus = (a, b) => Object.fromEntries(Object.keys(a).map((k) => [k, a[k] - b[k]]));

/**
 * What one meter reading costs the room it reads (requests, rows), measured
 * on a room nothing else touches: publish once, read twice, take the
 * difference.
 */
export async function readingCost(agent, base) {
  const room = 'cost-calibration';
  await publish(agent, base, room, 0);
  const a = flat(await readMeter(agent, base, room));
  const b = flat(await readMeter(agent, base, room));
  const d = minus(b, a);
  return { requests: d.requests, rowsRead: d.rowsRead, rowsWritten: d.rowsWritten };
}

/** Opens `users` clients of `transport` on `room` and keeps them going until close(). */
function startClients({ transport, agent, base, room, users, lastId, pollSecs, longPollWait, errors }) {
  const clients = [];
  let stopping = false;
  const received = { count: 0 };
  const connect = [];

  for (let i = 0; i < users; i++) {
    if (transport === 'ws') {
      connect.push(
        new Promise((resolve, reject) => {
          const ws = openSocket(`${base.replace('http', 'ws')}/rooms/${room}/ws`, {
            onFrame: (f) => {
              if (f?.type === 'welcome') resolve();
              else if (f?.type === 'message') received.count += 1;
            },
          });
          ws.on('error', (e) => (stopping ? null : reject(e)));
          ws.on('close', () => !stopping && errors.push(`ws ${i} closed`));
          clients.push({ close: () => ws.terminate() });
        }),
      );
    } else if (transport === 'sse') {
      connect.push(
        new Promise((resolve, reject) => {
          // Its own connection (no agent): a stream holds its socket all window.
          const req = http.get(`${base}/rooms/${room}/events`, { agent: false, headers: { accept: 'text/event-stream' } }, (res) => {
            if (res.statusCode !== 200) return reject(new Error(`sse ${i}: ${res.statusCode}`));
            readSse(res, (item) => item.kind === 'event' && item.event !== 'reset' && (received.count += 1));
            res.on('end', () => !stopping && errors.push(`sse ${i} ended`));
            res.on('error', () => {});
            resolve();
          });
          req.on('error', (e) => (stopping ? null : reject(e)));
          clients.push({ close: () => req.destroy() });
        }),
      );
    } else {
      // A poller: its own cursor and ETag, caught up before the window.
      const long = transport === 'longpoll';
      const me = { since: lastId, etag: undefined };
      const phaseMs = long ? 0 : (i / users) * pollSecs * 1000;
      const pollOnce = async () => {
        const q = long ? `since=${me.since}&wait=${longPollWait}` : `since=${me.since}`;
        const headers = me.etag ? { 'if-none-match': me.etag } : {};
        const r = await request(agent, `${base}/rooms/${room}/messages?${q}`, { headers, timeoutMs: (longPollWait + 10) * 1000 });
        if (r.status === 200) {
          const body = JSON.parse(r.body);
          received.count += body.messages.length;
          if (body.messages.length) me.since = body.messages[body.messages.length - 1].id;
          me.etag = r.headers.etag;
        } else if (r.status !== 304) throw new Error(`poll ${i}: ${r.status} ${r.body.slice(0, 200)}`);
      };
      connect.push(
        pollOnce().then(() => {
          // Runs until close(); its first poll above happened before the window.
          (async () => {
            const start = Date.now() + phaseMs;
            for (let k = 1; !stopping; k++) {
              if (!long) await sleep(Math.max(0, start + k * pollSecs * 1000 - Date.now()));
              if (stopping) break;
              try {
                await pollOnce();
              } catch (e) {
                if (!stopping) errors.push(String(e.message ?? e));
                await sleep(200);
              }
            }
          })();
        }),
      );
    }
  }
  return {
    received,
    ready: Promise.all(connect),
    close() {
      stopping = true;
      for (const c of clients) c.close();
    },
  };
}

async function withTimeout(promise, ms, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs one workload on a started hub ({ url, pid }) and returns the
 * window's measurements, summed over its rooms:
 * { transport, rooms, users, secs, publishes, expected, received, meter
 *   (the meters' differences, the readings' own cost taken off),
 *   cpuMs, storedBytes (per room, at the end), errors }.
 */
export async function runWorkload({ hub, transport, rooms = 1, users = 100, updatesPerMin, secs, pollSecs = 2, longPollWait = 30 }) {
  if (!TRANSPORTS.includes(transport)) throw new Error(`unknown transport ${transport}`);
  const base = hub.url.replace(/\/$/, '');
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
  const errors = [];
  const names = Array.from({ length: rooms }, (_, i) => `cost-${transport}-${i}`);
  const groups = [];
  try {
    const reading = await readingCost(agent, base);
    // The first publish creates the room's storage, and with it the meter.
    const lastIds = [];
    for (const room of names) lastIds.push(await publish(agent, base, room, 0));
    for (const [i, room] of names.entries()) {
      groups.push(startClients({ transport, agent, base, room, users, lastId: lastIds[i], pollSecs, longPollWait, errors }));
    }
    await withTimeout(Promise.all(groups.map((g) => g.ready)), 60_000, `${transport}: connecting ${users * rooms} clients`);
    // Let the connects' own work (welcome frames, first polls) finish
    // before the window opens, and let the room fall quiet for longer than
    // the meter's busy window (10 s): a month of connected clients has no
    // connect burst, and a busy room that falls quiet may lose up to a
    // minute of counting when it hibernates (README, "Known limits").
    await sleep(12_000);

    const before = [];
    for (const room of names) before.push(flat(await readMeter(agent, base, room)));
    const cpu0 = cpuMs(hub.pid);
    const received0 = groups.map((g) => g.received.count);
    const t0 = Date.now();

    // The backend: one update per room every interval, the first at once.
    const intervalMs = 60_000 / updatesPerMin;
    let publishes = 0;
    for (let k = 0; k * intervalMs < secs * 1000; k++) {
      await sleep(Math.max(0, t0 + k * intervalMs - Date.now()));
      await Promise.all(names.map((room) => publish(agent, base, room, k + 1)));
      publishes += names.length;
    }
    await sleep(Math.max(0, t0 + secs * 1000 - Date.now()));

    const after = [];
    const states = [];
    for (const room of names) {
      const s = await readMeter(agent, base, room);
      states.push(s);
      after.push(flat(s));
    }
    const windowMs = Date.now() - t0;
    const cpu = cpuMs(hub.pid) - cpu0;

    const meter = {};
    after.forEach((a, i) => {
      const d = minus(a, before[i]);
      d.requests -= reading.requests;
      d.rowsRead -= reading.rowsRead;
      d.rowsWritten -= reading.rowsWritten;
      for (const [k, v] of Object.entries(d)) meter[k] = (meter[k] ?? 0) + v;
    });
    // Messages still in flight at the end reading are delivered after it:
    // give clients a moment before counting what they received.
    await sleep(transport === 'poll' ? pollSecs * 1000 + 500 : 500);
    const received = groups.reduce((sum, g, i) => sum + g.received.count - received0[i], 0);
    const storedBytes = states.reduce((sum, s) => sum + s.usage.stored_bytes, 0) / rooms;
    return {
      transport,
      rooms,
      users,
      secs: windowMs / 1000,
      updatesPerMin,
      publishes,
      expected: publishes * users,
      received,
      meter,
      reading,
      cpuMs: cpu,
      storedBytes,
      errors: errors.slice(0, 5),
      errorCount: errors.length,
    };
  } finally {
    for (const g of groups) g.close();
    agent.destroy();
  }
}
