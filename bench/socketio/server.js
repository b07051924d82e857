// The classic Node.js real-time stack as a benchmark reference: an Express
// app with a Socket.IO server on the same HTTP server, rooms in memory, no
// history, no auth. Loopback only.
//
//   PORT=3000 node server.js
//
// Events (client -> server):
//   join    (room, ack?)          the socket joins `room`; ack({ok:true})
//   message ({room, data}, ack?)  every socket in `room` (the sender too, if
//                                 it joined) gets `message` with `data`; then
//                                 ack({ok:true})
// Wire frames are listed in launch.mjs.
import { createServer } from 'node:http';
import express from 'express';
import { Server } from 'socket.io';

const port = Number(process.env.PORT ?? 3000);
const host = process.env.HOST ?? '127.0.0.1';

const app = express();
app.get('/', (_req, res) => res.type('text/plain').send('socket.io bench server\n'));

const httpServer = createServer(app);
const io = new Server(httpServer, { serveClient: false });

const validRoom = (room) => typeof room === 'string' && room.length > 0 && room.length <= 128;

io.on('connection', (socket) => {
  socket.on('join', (room, ack) => {
    if (!validRoom(room)) return typeof ack === 'function' && ack({ ok: false, error: 'invalid_room' });
    socket.join(room);
    if (typeof ack === 'function') ack({ ok: true });
  });

  socket.on('message', (msg, ack) => {
    if (!msg || !validRoom(msg.room)) return typeof ack === 'function' && ack({ ok: false, error: 'invalid_message' });
    io.to(msg.room).emit('message', msg.data);
    if (typeof ack === 'function') ack({ ok: true });
  });
});

httpServer.listen(port, host, () => console.log(`socket.io bench server on http://${host}:${port}`));

const shutdown = () => {
  io.close();
  process.exit(0);
};
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
