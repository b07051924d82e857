// Soak: steady mixed load on the hub (bare workerd) for a while, sampling
// the server's memory, then checking that every subscriber got every
// message exactly once, in order. Not part of the test command.
//
//   node bench/soak.mjs [--minutes 10] [--ws 200] [--sse 100] [--pollers 50] [--rate 20]
//                       [--target hub|floor] [--no-idempotency]
//
// `--target floor` runs the same load on the runtime's floor (bench/floor), so
// a memory trend can be attributed to the hub or to the runtime.
//
// Subscribers churn: every few seconds some reconnect (resuming by id), so
// the room keeps opening and forgetting connections as real rooms do.
import http from 'node:http';
import { startHub } from '../scripts/launch/hub.mjs';
import { stateDir } from '../scripts/launch/state.mjs';
import { freePort } from '../scripts/launch/ports.mjs';
import { openSocket } from '../scripts/clients/ws.mjs';
import { readSse } from '../scripts/clients/sse.mjs';
import { readFileSync } from 'node:fs';
import * as floor from './floor/launch.mjs';

/** The value after `--name`, or undefined. */
const option = (name) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const arg = (name, d) => (option(name) === undefined ? d : Number(option(name)));
const MINUTES = arg('minutes', 10);
const N_WS = arg('ws', 200);
const N_SSE = arg('sse', 100);
const N_POLL = arg('pollers', 50);
const RATE = arg('rate', 20);
const TARGET = option('target') ?? 'hub';
const IDEMPOTENCY = !process.argv.includes('--no-idempotency');
const ROOM = 'soak';

const rssMiB = (pid) => {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
};

const state = stateDir();
const port = await freePort();
const hub =
  TARGET === 'floor'
    ? await floor.start({ port, storageDir: state.dir })
    : await startHub({ runtime: 'workerd', port, stateDir: state.dir, vars: { RATE_PER_SEC: '0', MAX_CONNECTIONS_PER_USER: '0', HEARTBEAT_SECS: '5' } });
const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });

class Tracker {
  constructor(name) {
    this.name = name;
    this.last = 0;
    this.count = 0;
    this.gaps = 0;
    this.dups = 0;
    this.resets = 0;
  }
  see(id) {
    if (id <= this.last) this.dups += 1;
    else {
      if (id !== this.last + 1) this.gaps += 1;
      this.last = id;
      this.count += 1;
    }
  }
}

function wsSubscriber(t) {
  let ws;
  const open = () => {
    ws = openSocket(`ws://127.0.0.1:${port}/rooms/${ROOM}/ws?since=${t.last}`, {
      onFrame: (m) => {
        if (m.type === 'message') t.see(m.id);
        else if (m.type === 'reset') t.resets += 1;
      },
    });
    ws.on('close', () => !stopping && setTimeout(open, 200));
    ws.on('error', () => {});
  };
  open();
  return { churn: () => ws.terminate(), close: () => ws.close() };
}

function sseSubscriber(t) {
  let req;
  const open = () => {
    let reopened = false;
    // Whatever ends this stream (server end, our churn, an error), resume once.
    const reopen = (delay) => {
      if (reopened || stopping) return;
      reopened = true;
      setTimeout(open, delay);
    };
    req = http.get(`http://127.0.0.1:${port}/rooms/${ROOM}/events?since=${t.last}`, { agent: false }, (res) => {
      readSse(res, (item) => {
        if (item.kind !== 'event') return;
        if (item.id !== undefined) t.see(Number(item.id));
        if (item.event === 'reset') t.resets += 1;
      });
      res.on('close', () => reopen(200));
    });
    req.on('error', () => reopen(500));
    req.on('close', () => reopen(200));
  };
  open();
  return { churn: () => req.destroy(), close: () => req.destroy() };
}

async function poller(t) {
  while (!stopping) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/rooms/${ROOM}/messages?since=${t.last}&wait=10&limit=1000`);
      if (res.status === 200) {
        const body = await res.json();
        if (body.reset) t.resets += 1;
        for (const m of body.messages) t.see(m.id);
      }
    } catch {
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

let stopping = false;
const trackers = [];
const subs = [];
for (let i = 0; i < N_WS; i += 1) trackers.push(new Tracker(`ws${i}`)), subs.push(wsSubscriber(trackers.at(-1)));
for (let i = 0; i < N_SSE; i += 1) trackers.push(new Tracker(`sse${i}`)), subs.push(sseSubscriber(trackers.at(-1)));
const pollers = [];
for (let i = 0; i < N_POLL; i += 1) trackers.push(new Tracker(`poll${i}`)), pollers.push(poller(trackers.at(-1)));

let published = 0;
let failed = 0;
const t0 = Date.now();
const samples = [];
const publisher = setInterval(async () => {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/rooms/${ROOM}/messages`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...(IDEMPOTENCY ? { 'Idempotency-Key': `soak-${published}-${Date.now()}` } : {}) },
      body: JSON.stringify({ data: { n: published, pad: 'x'.repeat(200) } }),
    });
    if (res.status === 201) published += 1;
    else failed += 1;
  } catch {
    failed += 1;
  }
}, 1000 / RATE);
const churn = setInterval(() => {
  // About 2% of the streaming subscribers drop and resume every 5 s.
  if (subs.length === 0) return;
  for (let k = 0; k < Math.max(1, subs.length / 50); k += 1) subs[Math.floor(Math.random() * subs.length)].churn();
}, 5000);
const sampler = setInterval(() => {
  const s = { t_s: Math.round((Date.now() - t0) / 1000), rss_mib: Number(rssMiB(hub.pid).toFixed(1)), published };
  samples.push(s);
  console.log(JSON.stringify(s));
}, 10000);

await new Promise((r) => setTimeout(r, MINUTES * 60_000));
clearInterval(publisher);
clearInterval(churn);
// Let the last messages arrive (bounded).
const deadline = Date.now() + 30_000;
while (Date.now() < deadline && trackers.some((t) => t.last < published)) await new Promise((r) => setTimeout(r, 250));
clearInterval(sampler);
stopping = true;
const complete = trackers.filter((t) => t.last === published && t.gaps === 0).length;
const summary = {
  target: TARGET,
  idempotency_keys: IDEMPOTENCY,
  minutes: MINUTES,
  subscribers: { ws: N_WS, sse: N_SSE, pollers: N_POLL },
  rate_per_s: RATE,
  published,
  publish_failures: failed,
  complete_subscribers: `${complete}/${trackers.length}`,
  duplicates: trackers.reduce((a, t) => a + t.dups, 0),
  gaps: trackers.reduce((a, t) => a + t.gaps, 0),
  resets: trackers.reduce((a, t) => a + t.resets, 0),
  rss_mib_first: samples[0]?.rss_mib,
  rss_mib_max: Math.max(...samples.map((s) => s.rss_mib)),
  rss_mib_last: samples.at(-1)?.rss_mib,
  rss_mib_by_minute: samples.filter((s) => s.t_s % 60 < 10).map((s) => s.rss_mib),
  // Who had not caught up when the drain deadline passed, and how far behind.
  incomplete_by_transport: Object.fromEntries(
    ['ws', 'sse', 'poll'].map((kind) => {
      const late = trackers.filter((t) => t.name.startsWith(kind) && !(t.last === published && t.gaps === 0));
      return [kind, { count: late.length, furthest_behind: late.length ? published - Math.min(...late.map((t) => t.last)) : 0 }];
    }),
  ),
};
console.log(JSON.stringify({ summary }));
for (const s of subs) s.close();
await hub.stop();
agent.destroy();
state.cleanup();
process.exit(0);
