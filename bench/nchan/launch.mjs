// Starts nginx + Nchan (bench/nchan/nginx.conf.template) in the foreground
// as a child process, on 127.0.0.1:port, with everything under `dir`.
// The wire formats are documented at the top of the template.
//
//   const s = await start({ port, dir }); ... await s.stop();
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { superviseServer } from '../../scripts/launch/supervise.mjs';

const here = dirname(fileURLToPath(import.meta.url));

/** The absolute path of Debian's Nchan module (package libnginx-mod-nchan). */
export function nchanModulePath() {
  const known = '/usr/lib/nginx/modules/ngx_nchan_module.so';
  if (existsSync(known)) return known;
  const listed = execFileSync('dpkg', ['-L', 'libnginx-mod-nchan'], { encoding: 'utf8' })
    .split('\n')
    .find((l) => l.endsWith('ngx_nchan_module.so'));
  if (!listed) throw new Error('ngx_nchan_module.so not found: apt-get install nginx-light libnginx-mod-nchan');
  return listed;
}

/** Writes `dir/nginx.conf` for `port`; returns its path. */
export function writeConfig({ port, dir }) {
  const prefix = resolve(dir);
  mkdirSync(prefix, { recursive: true });
  // Run as root, nginx would drop its worker to `nobody`, which cannot
  // enter a private temp dir: keep the worker as the invoking root instead.
  const user = process.getuid?.() === 0 ? 'user root;' : '';
  const conf = readFileSync(join(here, 'nginx.conf.template'), 'utf8')
    .replaceAll('{{NCHAN_MODULE}}', nchanModulePath())
    .replaceAll('{{USER}}', user)
    .replaceAll('{{PREFIX}}', prefix)
    .replaceAll('{{PORT}}', String(port));
  const path = join(prefix, 'nginx.conf');
  writeFileSync(path, conf);
  return path;
}

/** Returns the handle of superviseServer (scripts/launch/supervise.mjs) plus `workerPids()`; `pid` is nginx's master (its one worker is a child). */
export async function start({ port, dir = mkdtempSync(join(tmpdir(), 'bench-nchan-')) }) {
  const conf = writeConfig({ port, dir });
  const prefix = dirname(conf);
  const child = spawn('nginx', ['-p', prefix, '-c', conf, '-g', 'daemon off;'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const log = () => {
    let err = '';
    try {
      err = readFileSync(join(prefix, 'error.log'), 'utf8');
    } catch {}
    return out + err;
  };
  // SIGQUIT would wait for every subscriber; SIGTERM is nginx's fast shutdown.
  const server = await superviseServer(child, { port, name: 'nginx', log, stopSignal: 'SIGTERM' });
  return { ...server, workerPids: () => workerPids(child.pid) };
}

/** The pids of the master's children (the worker, which does the work). */
function workerPids(masterPid) {
  try {
    return readFileSync(`/proc/${masterPid}/task/${masterPid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}
