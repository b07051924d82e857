// The one Server-Sent Events reader of the tests and the benchmarks: it
// turns the bytes of an event stream into items, in wire order, and leaves
// the parsing itself to the `eventsource-parser` package (the parser the
// `eventsource` client uses), so no file here parses SSE by hand.
//
// Items:
//   { kind: 'event', id, event, data, json }  a dispatched event; `id` and
//       `event` are undefined when the event had no such line (as for the
//       hub's `reset`); `json` is JSON.parse(data), or undefined if not JSON
//   { kind: 'comment', comment }              a comment line, without its
//       ':' (the hub's heartbeat ':' gives '')
//   { kind: 'retry', retry }                  a `retry:` line, in ms
//   { kind: 'invalid', message }              a line the parser refused
//       (an unknown field, a bad retry): the hub should never send one
//
// Invariant: it only reads; it opens, times and closes nothing (the caller
// owns the connection).
import { createParser } from 'eventsource-parser';

/**
 * A reader that calls `onItem(item)` for every item of the stream fed to
 * it. `feed(chunk)` takes text, or bytes (decoded as UTF-8 across chunk
 * boundaries).
 */
export function sseReader(onItem) {
  const parser = createParser({
    onEvent({ id, event, data }) {
      let json;
      try {
        json = JSON.parse(data);
      } catch {
        // not JSON: `json` stays undefined
      }
      onItem({ kind: 'event', id, event, data, json });
    },
    onComment: (comment) => onItem({ kind: 'comment', comment }),
    onRetry: (retry) => onItem({ kind: 'retry', retry }),
    onError: (err) => onItem({ kind: 'invalid', message: err.message }),
  });
  const decoder = new TextDecoder();
  return {
    feed(chunk) {
      parser.feed(typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true }));
    },
  };
}

/** Feeds every chunk of a readable body (e.g. a `node:http` response) to a new reader calling `onItem`. */
export function readSse(body, onItem) {
  const reader = sseReader(onItem);
  body.on('data', (chunk) => reader.feed(chunk));
  return reader;
}
