// Starts the Express + Socket.IO reference server (bench/socketio/server.js)
// on 127.0.0.1:port as a child `node` process.
//
//   const s = await start({ port }); ... await s.stop();
//
// Wire frames, verified against socket.io 4.8.4 / engine.io 6.6.13 (Engine.IO
// protocol v4, Socket.IO protocol v5), one WebSocket text frame each:
//
//   connect   ws://127.0.0.1:PORT/socket.io/?EIO=4&transport=websocket
//   S -> C    0{"sid":"<eio sid>","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}
//                                         Engine.IO open
//   C -> S    40                           Socket.IO CONNECT, default namespace "/"
//   S -> C    40{"sid":"<socket id>"}      CONNECT accepted
//   C -> S    42["join","r"]               join room r, no ack
//   C -> S    421["join","r"]              join room r, ack id 1 ...
//   S -> C    431[{"ok":true}]             ... acknowledged once in the room
//   C -> S    422["message",{"room":"r","data":{"x":1}}]
//                                          publish, ack id 2 (any decimal id)
//   S -> C    42["message",{"x":1}]        delivery, to every socket in r
//                                          (the sender too, if it joined)
//   S -> C    432[{"ok":true}]             ack of publish 2; in practice after
//                                          the sender's own delivery
//   S -> C    2                            Engine.IO ping, every pingInterval
//   C -> S    3                            pong: required within pingTimeout,
//                                          else the server drops the socket
//                                          (seen: 45 s after connect, no
//                                          close code, i.e. 1005 at the client)
//   to leave, the client just closes the WebSocket.
//
// Frame grammar: <engine type digit><socket type digit>[<ack id>]<JSON array>;
// engine 4 = message, socket 2 = EVENT, 3 = ACK. A publish without an ack id
// ("42[...]") gets no 43 answer, and is still delivered. Send "40" and wait
// for "40{...}" before any event.
import { spawn } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { superviseServer } from '../../scripts/launch/supervise.mjs';

const here = dirname(fileURLToPath(import.meta.url));

/** Returns the server's handle (see superviseServer in scripts/launch/supervise.mjs). */
export async function start({ port }) {
  const child = spawn(process.execPath, [join(here, 'server.js')], {
    cwd: here,
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  return superviseServer(child, { port, name: 'socket.io server', log: () => log });
}
