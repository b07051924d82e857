// What the entry module (./worker.js) remembers of the crate's answers, so
// that a repeat of a request it has seen is handled without entering
// WebAssembly (issue 19: each side's entry into the module and its Rust
// cost a `304` ~25 µs, against a hand-written JavaScript Worker and
// Durable Object; README, "Benchmarks").
//
// The crate decides; this module only remembers and looks up:
// - `RequestHeads` packs a request's method, URL and the headers the crate
//   reads into one string: the crate parses the same string (the packed
//   form: `core::request_head`), so two requests with the same packed head
//   are the same request to the crate, and the string is the memo's key.
// - `Forwards` (the Worker, one per isolate): heads the crate sent to a
//   room as they came (`crate::rooms_call::forward`), with the room. The
//   crate remembers only decisions that depend on nothing but the head
//   (an anonymous poll or publish, no poll cache; see `crate::routes`).
// - `NotModified` (one per room): requests the room answered `304`
//   (immediate conditional polls), with the answer's headers. The room
//   forgets them all, in the same synchronous stretch, whenever its ETag
//   may change (`durable::RoomObject::answers_changed`), so an answer from
//   here is always the one the room would give. Requests answered here are
//   counted, and handed to the room's meter at its next event; after
//   `COUNT_EVERY` of them the next request goes to the room, so at most
//   that many are uncounted at any time.
//
// Invariants: both memos are bounded (`MAX_ENTRIES`, emptied when full;
// keys longer than `MAX_KEY` are never kept), so a client sending endless
// distinct requests costs a lookup and a refill, never memory; a request
// with a body is answered from a memo only where the crate reads that body
// (a publish), since a body nobody reads breaks `wrangler dev`
// (`crate::body`).

const MAX_ENTRIES = 1024;
const MAX_KEY = 2048;
const COUNT_EVERY = 256;

// A map that keeps at most MAX_ENTRIES short keys.
class Bounded {
  #entries = new Map();

  get size() {
    return this.#entries.size;
  }

  get(key) {
    return this.#entries.get(key);
  }

  put(key, value) {
    if (key.length > MAX_KEY) return;
    if (this.#entries.size >= MAX_ENTRIES) this.#entries.clear();
    this.#entries.set(key, value);
  }

  clear() {
    this.#entries.clear();
  }
}

export class RequestHeads {
  #names;
  #descriptionHeader;

  // `names`: the headers the crate reads, one per line; `descriptionHeader`:
  // the internal header that carries a room request's description.
  constructor(names, descriptionHeader) {
    this.#names = names.split('\n');
    this.#descriptionHeader = descriptionHeader;
  }

  // `METHOD\nURL` then, per header, `\n-` when absent or `\n+value`.
  pack(request, headers = request.headers) {
    let out = request.method + '\n' + request.url;
    for (const name of this.#names) {
      const value = headers.get(name);
      out += value === null ? '\n-' : '\n+' + value;
    }
    return out;
  }

  // A room request's description (JSON, so it starts with `{`) when it
  // has one, else its packed head (which starts with the method).
  describedOrPacked(request) {
    const headers = request.headers;
    const described = headers.get(this.#descriptionHeader);
    return described === null ? this.pack(request, headers) : described;
  }
}

export class Forwards {
  #rooms = new Bounded();

  // The room `head` goes to as it came, or undefined. A request with a
  // body goes only where the room reads it.
  roomFor(head, request) {
    const entry = this.#rooms.get(head);
    if (entry === undefined || (!entry.bodyRead && request.body !== null)) return undefined;
    return entry.room;
  }

  // Called by the crate (`crate::memo`).
  rememberForward(head, room, bodyRead) {
    this.#rooms.put(head, { room, bodyRead });
  }
}

export class NotModified {
  #answers = new Bounded();
  #uncounted = 0;

  // A `304` for `key`, or undefined (then the room must answer).
  answer(key, request) {
    if (this.#answers.size === 0 || this.#uncounted >= COUNT_EVERY || request.body !== null) return undefined;
    const headers = this.#answers.get(key);
    if (headers === undefined) return undefined;
    this.#uncounted++;
    return new Response(null, { status: 304, headers });
  }

  // Called by the crate (`crate::memo`): `response` is the room's `304`
  // to `key`.
  rememberAnswer(key, response) {
    this.#answers.put(key, Object.fromEntries(response.headers));
  }

  forget() {
    this.#answers.clear();
  }

  // How many requests were answered here since the last call.
  takeAnswered() {
    const n = this.#uncounted;
    this.#uncounted = 0;
    return n;
  }
}
