// What the hub costs on Cloudflare, measured: drives defined workloads on
// bare workerd, one transport at a time, reads the rooms' meters, and
// prices a month at the platform's published prices (bench/cost/prices.mjs).
// Writes bench/results/cost-<stamp>.md and cost-<stamp>.svg.
//
//   npm run cost                # both patterns, 60 s and 120 s windows (about 15 minutes)
//   npm run cost -- --quick     # 10 s windows, a smoke test
//   node bench/cost.mjs --render bench/results/cost-<stamp>.json
//                               # the table and plot again from a run's saved rows
//
// The workload (the seed article's dashboard, scaled down): every user is
// one client in a room of 100 users; the app's backend publishes ~100-byte
// JSON updates to each room over HTTP; WebSocket and SSE clients stay
// connected all month (their connects are not in the window); pollers poll
// every 2 s with If-None-Match, as the article's client does; long pollers
// wait up to 30 s and ask again at once. Patterns: "dashboard" at the
// article's 30 updates/min, and "quiet" at 2 updates/min, slower than the
// 10 s after which an idle room may hibernate.
//
// Extrapolation assumptions: rooms are independent Durable Objects, so a
// deployment of users/100 rooms does users/100 times what one measured
// room does per second, all month (30 days); the Worker forwards every
// request to its room and does nothing else; the included amounts are
// taken once, for the whole account. What is not measured: the platform's
// own machines (this is workerd on this machine), CPU split between Worker
// and Durable Object (see the report's "Worker CPU ≤"), reconnects.
//
// Invariants: loopback only; every wait has a timeout (workload.mjs);
// each transport runs on a fresh hub that is stopped after it.
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { cpus, totalmem, release } from 'node:os';
import { spawnSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHub } from '../scripts/launch/hub.mjs';
import { WORKERD_BIN } from '../scripts/launch/workerd.mjs';
import { runWorkload, TRANSPORTS } from './cost/workload.mjs';
import { monthlyBill, monthOfRooms } from './cost/prices.mjs';
import { renderReport, renderPlot } from './cost/report.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const quick = args.includes('--quick');

const USERS_PER_ROOM = 100;
const SIZES = [1000, 10000, 100000];
const POLL_SECS = 2;
const LONG_POLL_WAIT = 30;
const PATTERNS = [
  { name: 'dashboard', updatesPerMin: 30, secs: quick ? 10 : 60 },
  { name: 'quiet', updatesPerMin: 2, secs: quick ? 10 : 120 },
];
// Our throttles off, so they measure the workload, not our limits.
const HUB_VARS = { RATE_PER_SEC: '0', MAX_CONNECTIONS_PER_USER: '0' };

/** A window's meter differences as rates per room-second, in monthlyBill's terms. */
function perRoomSecond(run) {
  const k = 1 / (run.secs * run.rooms);
  const m = run.meter;
  return {
    // Every request that reached the room came through the Worker.
    workerRequests: m.requests * k,
    workerCpuMs: run.cpuMs * k,
    doRequests: m.requests * k,
    wsMessagesIn: m.wsMessagesIn * k,
    alarms: m.alarms * k,
    awakeSeconds: (m.awakeMs / 1000) * k,
    rowsRead: m.rowsRead * k,
    // The page bills each setAlarm() as a row written; the meter counts
    // rows through SQL only, so each alarm that fired counts as one set.
    rowsWritten: (m.rowsWritten + m.alarms) * k,
  };
}

function machine() {
  const mem = `${Math.round(totalmem() / 2 ** 30)} GiB`;
  return `${cpus().length} × ${cpus()[0]?.model?.trim() ?? 'cpu'}, ${mem}, Linux ${release()}`;
}

const outDir = join(here, 'results');

/** A measured row with its monthly bills at each size (the prices applied here, at render). */
function priced(row) {
  if (row.run.error) return { ...row, bills: [] };
  const rates = perRoomSecond(row.run);
  const bills = SIZES.map((users) => {
    const rooms = users / USERS_PER_ROOM;
    return {
      users,
      rooms,
      bill: monthlyBill(monthOfRooms(rates, row.run.storedBytes, rooms)),
    };
  });
  return { ...row, bills };
}

/** Writes the report and the plot of a run (its measurements saved beside them as JSON). */
function render({ meta, patterns, rows }) {
  mkdirSync(outDir, { recursive: true });
  const name = `cost-${meta.stamp}`;
  writeFileSync(join(outDir, `${name}.json`), `${JSON.stringify({ meta, patterns, rows }, null, 1)}\n`);
  const withBills = rows.map(priced);
  writeFileSync(join(outDir, `${name}.md`), renderReport(meta, patterns, withBills));
  writeFileSync(join(outDir, `${name}.svg`), renderPlot(meta, patterns, withBills));
  console.log(`\nwrote bench/results/${name}.md, .svg and .json`);
}

async function measure() {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const meta = {
    stamp,
    command: `npm run cost${args.length ? ` -- ${args.join(' ')}` : ''}`,
    machine: machine(),
    workerd: spawnSync(WORKERD_BIN, ['--version'], { encoding: 'utf8' }).stdout.trim(),
    node: process.version,
    longPollWait: LONG_POLL_WAIT,
  };
  console.log(meta);
  const rows = [];
  for (const pattern of PATTERNS) {
    for (const transport of TRANSPORTS) {
      let hub;
      let run;
      try {
        hub = await startHub({ runtime: 'workerd', vars: HUB_VARS });
        run = await runWorkload({
          hub,
          transport,
          users: USERS_PER_ROOM,
          updatesPerMin: pattern.updatesPerMin,
          secs: pattern.secs,
          pollSecs: POLL_SECS,
          longPollWait: LONG_POLL_WAIT,
        });
      } catch (e) {
        run = { transport, error: String(e?.message ?? e) };
      } finally {
        await hub?.stop();
      }
      const row = { pattern: pattern.name, transport, run };
      rows.push(row);
      console.log(JSON.stringify({ pattern: pattern.name, ...run }));
    }
  }
  return { meta, patterns: PATTERNS, rows };
}

const from = args.indexOf('--render');
const result = from >= 0 ? JSON.parse(readFileSync(args[from + 1], 'utf8')) : await measure();
render(result);
if (result.rows.some((r) => r.run.error)) process.exitCode = 1;
