// Runs every benchmark scenario on every system that supports it, side by
// side in one run, and writes bench/results/<stamp>.jsonl, a markdown table
// (bench/results/<stamp>.md) and a latency plot (bench/results/<stamp>-latency.svg).
//
//   node bench/run.mjs [--quick] [--only hub,floor] [--scenarios fanout-ws-100,...]
//
// Each system starts fresh for each scenario (so idle memory has a clean
// baseline), on loopback, and is stopped after it.
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync, appendFileSync, mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir, cpus, totalmem, release } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHub } from '../scripts/launch/hub.mjs';
import { WORKERD_BIN } from '../scripts/launch/workerd.mjs';
import { freePort } from '../scripts/launch/ports.mjs';
import * as floor from './floor/launch.mjs';
import * as nullWorker from './null/launch.mjs';
import * as nchan from './nchan/launch.mjs';
import * as socketio from './socketio/launch.mjs';
import { renderTable, renderPlot } from './report.mjs';
import { HUB_BENCH_VARS, runLoadgen, warmUp } from './harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const flag = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1].split(',') : null;
};
const only = flag('--only');
const onlyScenarios = flag('--scenarios');
const scale = (n) => (quick ? Math.max(10, Math.round(n / 10)) : n);


/**
 * The hub with webhooks on: every publish also goes into the room's
 * outbox and is POSTed, signed, to a loopback receiver that answers 204 at
 * once (what webhooks cost a publish, not what a slow receiver does).
 */
async function hubWithWebhooks(port, dir) {
  const receiver = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(204).end());
  });
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const vars = {
    ...HUB_BENCH_VARS,
    WEBHOOK_URL: `http://127.0.0.1:${receiver.address().port}/hooks`,
    WEBHOOK_SECRET: `whsec_${randomBytes(32).toString('base64')}`,
  };
  const hub = await startHub({ runtime: 'workerd', port, stateDir: join(dir, 'do'), vars });
  return {
    ...hub,
    async stop() {
      await hub.stop();
      await new Promise((resolve) => receiver.close(resolve));
    },
  };
}

const SYSTEMS = {
  hub: async (port, dir) => startHub({ runtime: 'workerd', port, stateDir: join(dir, 'do'), vars: HUB_BENCH_VARS }),
  // The hub with the Worker's poll cache on: a repeat conditional poll is
  // answered 304 by the Worker for up to 1 s without the hop to the room.
  'hub-pollcache': async (port, dir) =>
    startHub({ runtime: 'workerd', port, stateDir: join(dir, 'do'), vars: { ...HUB_BENCH_VARS, POLL_CACHE_MS: '1000' } }),
  'hub-webhooks': hubWithWebhooks,
  floor: async (port, dir) => floor.start({ port, storageDir: join(dir, 'do') }),
  // No Worker can answer a request for less: workerd's and the kernel's
  // own cost per request (bench/null/worker.js answers 304 at once).
  'runtime-null': async (port, dir) => nullWorker.start({ port, storageDir: join(dir, 'do') }),
  nchan: async (port, dir) => nchan.start({ port, dir }),
  socketio: async (port) => socketio.start({ port }),
};

// name, systems, loadgen arguments
const SCENARIOS = [
  ['fanout-ws-100', ['hub', 'floor', 'nchan', 'socketio'], ['fanout', '--transport', 'ws', '--subs', scale(100), '--rate', 50, '--secs', 10]],
  ['fanout-ws-1000', ['hub', 'floor', 'nchan', 'socketio'], ['fanout', '--transport', 'ws', '--subs', scale(1000), '--rate', 50, '--secs', 10]],
  ['fanout-sse-1000', ['hub', 'floor', 'nchan'], ['fanout', '--transport', 'sse', '--subs', scale(1000), '--rate', 50, '--secs', 10]],
  ['fanout-longpoll-200', ['hub', 'floor', 'nchan'], ['fanout', '--transport', 'longpoll', '--subs', scale(200), '--rate', 50, '--secs', 10]],
  ['idle-ws-10000', ['hub', 'floor', 'nchan', 'socketio'], ['idle', '--transport', 'ws', '--subs', scale(10000)]],
  ['idle-sse-5000', ['hub', 'floor', 'nchan'], ['idle', '--transport', 'sse', '--subs', scale(5000)]],
  ['poll-500', ['hub', 'hub-pollcache', 'floor', 'runtime-null', 'nchan'], ['poll', '--subs', scale(500), '--secs', 10]],
  ['publish-0', ['hub', 'hub-webhooks', 'floor', 'nchan', 'socketio'], ['publish', '--concurrency', 16, '--subs', 0, '--secs', 10]],
  ['publish-100', ['hub', 'hub-webhooks', 'floor', 'nchan', 'socketio'], ['publish', '--concurrency', 16, '--subs', scale(100), '--secs', 10]],
  ['cost304', ['hub', 'hub-pollcache', 'floor', 'runtime-null'], ['cost304', '--concurrency', 16, '--secs', 5]],
];

function versions() {
  // Some tools (nginx -v) print their version on stderr.
  const v = (cmd, a) => {
    const r = spawnSync(cmd, a, { encoding: 'utf8' });
    return `${r.stdout || ''}${r.stderr || ''}`.trim().split('\n')[0] || 'unknown';
  };
  const pkg = (p) => JSON.parse(readFileSync(p, 'utf8')).version;
  return {
    machine: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Linux ${release()}`,
    workerd: v(WORKERD_BIN, ['--version']),
    nginx: v('nginx', ['-v']),
    nchan: v('dpkg-query', ['-W', '-f=${Version}', 'libnginx-mod-nchan']),
    socketio: pkg(join(here, 'socketio/node_modules/socket.io/package.json')),
    node: process.version,
  };
}

const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const outDir = join(here, 'results');
mkdirSync(outDir, { recursive: true });
const jsonl = join(outDir, `${stamp}.jsonl`);
const meta = { stamp, command: `npm run bench${args.length ? ` -- ${args.join(" ")}` : ""}`, ...versions() };
appendFileSync(jsonl, `${JSON.stringify({ meta })}\n`);
console.log(meta);

const results = [];
for (const [name, systems, argv] of SCENARIOS) {
  if (onlyScenarios && !onlyScenarios.includes(name)) continue;
  for (const system of systems) {
    if (only && !only.includes(system)) continue;
    const dir = mkdtempSync(join(tmpdir(), `bench-${system}-`));
    const port = await freePort();
    let server;
    try {
      server = await SYSTEMS[system](port, dir);
      // The load generator speaks each system's protocol; variants of the
      // hub speak the hub's.
      const protocol = system.startsWith('hub') ? 'hub' : system === 'runtime-null' ? 'floor' : system;
      if (protocol === 'hub' || protocol === 'floor') await warmUp(protocol, server);
      const result = await runLoadgen([...argv, '--system', protocol, '--url', server.url, '--pid', server.pid, '--label', name]);
      const row = { name, ...result, system };
      results.push(row);
      appendFileSync(jsonl, `${JSON.stringify(row)}\n`);
      console.log(JSON.stringify(row).slice(0, 400));
    } catch (e) {
      const row = { name, system, error: String(e?.message ?? e).slice(0, 400) };
      results.push(row);
      appendFileSync(jsonl, `${JSON.stringify(row)}\n`);
      console.log(row);
    } finally {
      await server?.stop?.();
      rmSync(dir, { recursive: true, force: true });
    }
  }
}

writeFileSync(join(outDir, `${stamp}.md`), renderTable(meta, results));
writeFileSync(join(outDir, `${stamp}-latency.svg`), renderPlot(meta, results));
console.log(`\nwrote ${jsonl}, ${stamp}.md and ${stamp}-latency.svg in bench/results/`);
