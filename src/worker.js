// The module the runtime loads: the Worker's `fetch` and the `RoomObject`
// Durable Object class, handed straight to the crate's WebAssembly exports
// (wasm-bindgen's glue in ./index.js, made by scripts/build.sh).
//
// Why hand-written (issue 19): worker-build's generated module made the
// default export a `WorkerEntrypoint` class, which the runtime constructs
// for every request, and wrapped that class, the Durable Object class, each
// instance and each method call in a `Proxy`. Measured with
// bench/profile.mjs, that was ~15 µs of a `304`. Here the default export
// is a plain object and the class a plain class.
//
// What it keeps from that glue, because a Rust panic aborts the
// WebAssembly instance: a `WebAssembly.RuntimeError` marks the instance
// broken; the next call resets it (`__wbg_reset_state`, a fresh instance
// and memory), and each room makes its Rust object again when the instance
// it was made in is gone (its in-memory state is lost; its storage and its
// hibernated sockets are not).
//
// A repeat of a request the crate already decided is handled here, from
// what the crate asked this module to remember (./memo.js, which says
// when that is the crate's own answer).
import * as hub from './index.js';
import { Forwards, NotModified, RequestHeads } from './memo.js';

const initState = hub.__worker_init_state();
const heads = new RequestHeads(hub.requestHeadNames(), hub.descriptionHeader());
const forwards = new Forwards();

function resetIfBroken() {
  if (initState.criticalError) {
    console.log('Reinitializing Wasm application');
    hub.__wbg_reset_state();
    initState.criticalError = false;
    initState.instanceId++;
  }
}

function noteIfBroken(error) {
  if (error instanceof WebAssembly.RuntimeError) {
    console.error('Critical', error);
    initState.criticalError = true;
  }
}

// A panic in a pending handler surfaces here, outside any call below.
addEventListener('error', (event) => noteIfBroken(event.error));

// Every call into the module: reset first if it is broken, and note a
// panic that breaks it.
function guarded(call) {
  resetIfBroken();
  try {
    return call();
  } catch (error) {
    noteIfBroken(error);
    throw error;
  }
}

export default {
  fetch(request, env, ctx) {
    const head = heads.pack(request);
    const room = forwards.roomFor(head, request);
    if (room !== undefined) {
      // As `crate::rooms_call::forward` sends it, failures included.
      return env.ROOMS.getByName(room)
        .fetch(request)
        .then(undefined, (error) => guarded(() => hub.roomFailure(error, head, env)));
    }
    return guarded(() => hub.fetch(request, env, ctx, head, forwards));
  },
};

export class RoomObject {
  #ctx;
  #env;
  #room = null;
  #instanceId = -1;
  #notModified = new NotModified();

  constructor(ctx, env) {
    this.#ctx = ctx;
    this.#env = env;
    this.#call(() => undefined);
  }

  // Runs `f` on this room's Rust object, made anew if the instance that
  // made it was reset.
  #call(f) {
    return guarded(() => {
      if (this.#instanceId !== initState.instanceId) {
        // What the lost instance remembered is not this one's to answer.
        this.#notModified.forget();
        this.#room = new hub.RoomObject(this.#ctx, this.#env, this.#notModified);
        this.#instanceId = initState.instanceId;
      }
      return f(this.#room);
    });
  }

  fetch(request) {
    const key = heads.describedOrPacked(request);
    // Not while the instance is broken: a panic may have cut an event
    // short after it changed the room (it is reset at the next call).
    const answered = initState.criticalError ? undefined : this.#notModified.answer(key, request);
    return answered ?? this.#call((room) => room.fetch(request, key));
  }

  alarm() {
    return this.#call((room) => room.alarm());
  }

  webSocketMessage(ws, message) {
    return this.#call((room) => room.webSocketMessage(ws, message));
  }

  webSocketClose(ws, code, reason, wasClean) {
    return this.#call((room) => room.webSocketClose(ws, code, reason, wasClean));
  }

  webSocketError(ws, error) {
    return this.#call((room) => room.webSocketError(ws, error));
  }
}
