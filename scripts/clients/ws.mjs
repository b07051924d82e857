// The one WebSocket client core of the tests and the benchmarks: opens a
// socket with the `ws` package and hands each frame over decoded, so no
// file decodes frames or sets up sockets its own way. The tests' WsClient
// (tests/support.mjs) buffers and awaits frames on top of it; a benchmark
// uses it bare.
//
// Frames: parsed JSON, or the text itself when it is not JSON (e.g. `pong`),
// or { binary: <base64> } for a binary frame.
//
// Invariant: an upgrade waits at most `handshakeTimeout` (10 s unless the
// caller says otherwise); the caller owns the socket and closes it.
import WebSocket from 'ws';

export { WebSocket };

/** One received frame, decoded as described above. */
export function decodeFrame(data, isBinary) {
  if (isBinary) return { binary: Buffer.from(data).toString('base64') };
  const text = data.toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * Opens a WebSocket to `url` and calls `onFrame(frame)` for every frame
 * (decoded), from the first one on. Other options go to the `ws`
 * constructor (headers, origin, handshakeTimeout, ...). Returns the `ws`
 * socket.
 */
export function openSocket(url, { onFrame = () => {}, ...wsOptions } = {}) {
  const ws = new WebSocket(url, { handshakeTimeout: 10_000, ...wsOptions });
  ws.on('message', (data, isBinary) => onFrame(decodeFrame(data, isBinary)));
  return ws;
}
