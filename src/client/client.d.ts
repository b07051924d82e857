// Types for the hub's browser client, served beside it at /client.d.ts.

export type Transport = 'ws' | 'sse' | 'poll';
export type TransportOption = 'auto' | 'hints' | Transport;
export type State = 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface Envelope<T = unknown> {
  id: number;
  /** The app event name (`message` unless the publisher named one). */
  event: string;
  /** The publisher's verified user (`sub`), or null when anonymous. */
  from: string | null;
  /** Server time, ms since the epoch. */
  ts: number;
  data: T;
}

export interface Status {
  state: State;
  transport: Transport;
  /** When reconnecting: the wait before the next attempt. */
  retryInMs?: number;
  /**
   * Why the room is reconnecting or closed: an error code such as
   * `unauthorized`, `forbidden`, `not_found`, `too_many_connections`,
   * `token_expired`, `disconnected`, `room_deleted`, `policy_violation`,
   * `unreachable` (the hub cannot be reached) or `connect_failed`.
   */
  error?: string;
  /** The same, for a person. */
  message?: string;
}

export interface Reset {
  /** `history_exceeded` (messages were dropped) or `cursor_ahead` (the hub's log is not the one the page saw). */
  reason: string;
  /** The oldest id the hub still keeps; delivery resumes there (lastId becomes first_id - 1). */
  first_id: number;
}

export interface OpenInfo {
  transport: Transport;
  /** False on the first open, true on every reconnect. */
  resumed: boolean;
}

export interface CloseInfo {
  /** The error that ended the room; absent after `close()`. */
  error?: HubError;
}

export interface Limits {
  max_message_bytes: number;
  /** Publishes per second per connection; 0 = unlimited. */
  rate_per_sec: number;
  rate_burst: number;
}

export interface Hints {
  /** The page sends as much as it receives (chat, collaboration). */
  bidirectional?: boolean;
  /** Expected updates per minute; below 1, polling is cheapest. */
  updatesPerMinute?: number;
}

export interface Backoff {
  /** First retry window (full jitter), doubled per failed attempt. Default 500. */
  baseMs?: number;
  /** Largest retry window. Default 15000. */
  capMs?: number;
}

export interface ConnectOptions {
  /** Default 'auto': WebSocket, falling back to SSE then polling when one is blocked, and back up when it passes again. */
  transport?: TransportOption;
  hints?: Hints;
  /**
   * A hub token, or a function (sync or async) called before each connect
   * for a fresh one. With a function, `unauthorized`/`token_expired` fetch
   * a new token and reconnect (resuming from the last id); with a string
   * they close the room with one `error` event. The hub ends a live
   * connection when its token expires (`token_expired`). The token never
   * goes into a URL: SSE and polling send it in `Authorization`, and a
   * WebSocket connects with a single-use ticket obtained for it
   * (`POST /rooms/{room}/ticket`).
   */
  token?: string | (() => string | Promise<string>);
  /** Resume after this id; without it (and without `history`), live messages only. */
  since?: number;
  /** Without a cursor: start with up to this many of the newest messages. */
  history?: number;
  /** Keep the cursor across reloads: 'session' (sessionStorage), 'local' (localStorage) or a Storage-like object. It wins over `since`. */
  resume?: 'session' | 'local' | false | Pick<Storage, 'getItem' | 'setItem'>;
  /** Poll at this interval (with If-None-Match) instead of long-polling. */
  pollIntervalMs?: number;
  /** Long-poll wait in seconds. Default 25. */
  longPollSecs?: number;
  backoff?: Backoff;
  /** How long a connection may take to open. Default 5000. */
  connectTimeoutMs?: number;
  /** WebSocket `ping` interval; no frame for 3 intervals means the socket is dead. Default 10000. */
  pingIntervalMs?: number;
  /** SSE silence after which the stream is dead. Default: 3 observed heartbeats + 1 s (50 s until two are seen). */
  heartbeatTimeoutMs?: number;
  /** How often (doubling up to 5 min while it fails) a fallback transport tries the better ones. Default 30000. */
  probeIntervalMs?: number;
  /** Default per-publish timeout; 0 = none. Default 30000. */
  publishTimeoutMs?: number;
  /** Most publishes waiting at once; more reject with `queue_full`. Default 1000. */
  maxPending?: number;
  /** Per-request timeout of a poll, on top of its long-poll wait. Default 10000. */
  requestTimeoutMs?: number;
}

export interface PublishOptions {
  /** App event name; `reset`, `join`, `leave`, `presence`, `error`, `open`, `close` are reserved. */
  event?: string;
  /** Reject with `timeout` after this long (the message may still be stored). */
  timeoutMs?: number;
  /** Reject with `aborted` when this aborts (a message already sent may still be stored). */
  signal?: AbortSignal;
}

export declare class HubError extends Error {
  /** Stable code: a hub error code (`too_large`, `forbidden`, …) or the client's (`timeout`, `aborted`, `closed`, `queue_full`, `unreachable`, …). */
  code: string;
  /** The HTTP status, when an HTTP answer said it. */
  status?: number;
  /** The WebSocket close code, when a close said it. */
  closeCode?: number;
  /** How long the hub asked to wait. */
  retryAfterMs?: number;
}

/** The client's own events. Nothing a publisher sends can trigger them. */
export interface RoomEvents {
  /** Every app message, whatever its event name. */
  message: Envelope;
  status: Status;
  /** A failure the page should know about, told once (until the next successful open). */
  error: HubError;
  reset: Reset;
  presence: string[];
  join: string;
  leave: string;
  open: OpenInfo;
  close: CloseInfo;
}

export type AppEventName = `event:${string}`;

export interface Room {
  readonly url: URL;
  readonly status: Status;
  readonly transport: Transport;
  /** The id of the last message delivered (the resume cursor). */
  readonly lastId: number | null;
  /** Resolves on the first open; rejects if the room closes before. */
  readonly ready: Promise<void>;
  /** The hub's limits, from the WebSocket welcome (null until known). */
  readonly limits: Limits | null;
  /** Members present (WebSocket transport): all of them, or the first
   * PRESENCE_MAX_MEMBERS (sorted) when the room has more. */
  readonly presence: string[];
  /** How many members the room has (WebSocket transport). */
  readonly presenceCount: number;

  on<K extends keyof RoomEvents>(event: K, fn: (value: RoomEvents[K]) => void): () => void;
  /** Messages of one app event name: `room.on('event:chat', fn)`. */
  on(event: AppEventName, fn: (m: Envelope) => void): () => void;
  off<K extends keyof RoomEvents>(event: K, fn: (value: RoomEvents[K]) => void): void;
  off(event: AppEventName, fn: (m: Envelope) => void): void;
  once<K extends keyof RoomEvents>(event: K, fn: (value: RoomEvents[K]) => void): () => void;
  once(event: AppEventName, fn: (m: Envelope) => void): () => void;
  once<K extends keyof RoomEvents>(event: K): Promise<RoomEvents[K]>;
  once(event: AppEventName): Promise<Envelope>;
  /** @deprecated a bare app event name; use `event:<name>`. Lifecycle names never match app events. */
  on(event: string, fn: (m: Envelope) => void): () => void;

  /** Resolves to the stored message's id; settles exactly once; retries never store twice. */
  publish(data: unknown, options?: PublishOptions): Promise<number>;
  /** Drops the connection and connects again now from the best transport (also after a fatal error). */
  reconnect(): void;
  /** Closes for good: pending publishes reject with `closed`. */
  close(): void;
}

export function connect(url: string | URL, options?: ConnectOptions): Room;
export function chooseTransport(hints?: Hints): Transport;
export function backoffDelay(attempt: number, baseMs?: number, capMs?: number): number;
