// Types for the hub's browser client, served beside it at /client.d.ts.

export type Transport = 'ws' | 'sse' | 'poll';
export type TransportOption = 'auto' | 'hints' | Transport;
export type State = 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface Envelope<T = unknown> {
  id: number;
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
  /** When reconnecting: the backoff before the next attempt. */
  retryInMs?: number;
  /** When closed by an error: its code. */
  error?: string;
}

export interface Reset {
  /** `history_exceeded` or `cursor_ahead`: messages were missed. */
  reason: string;
  /** The oldest id the hub still keeps; delivery resumes there. */
  first_id: number;
}

export interface Hints {
  /** The page sends as much as it receives (chat, collaboration). */
  bidirectional?: boolean;
  /** Expected updates per minute; below 1, polling is cheapest. */
  updatesPerMinute?: number;
}

export interface ConnectOptions {
  transport?: TransportOption;
  hints?: Hints;
  token?: string;
  /** Resume after this id; without it, live messages only. */
  since?: number;
  /** Poll at this interval (with If-None-Match) instead of long-polling. */
  pollIntervalMs?: number;
}

export interface HubError extends Error {
  code: string;
  status?: number;
}

export interface Room {
  readonly url: URL;
  readonly status: Status;
  readonly transport: Transport;
  /** The id of the last message delivered. */
  readonly lastId: number | null;
  /** Members present (WebSocket transport): all of them, or the first
   * PRESENCE_MAX_MEMBERS (sorted) when the room has more. */
  readonly presence: string[];
  /** How many members the room has (WebSocket transport). */
  readonly presenceCount: number;
  on(event: 'message', fn: (m: Envelope) => void): () => void;
  on(event: 'status', fn: (s: Status) => void): () => void;
  on(event: 'presence', fn: (members: string[]) => void): () => void;
  on(event: 'join' | 'leave', fn: (user: string) => void): () => void;
  on(event: 'reset', fn: (r: Reset) => void): () => void;
  on(event: 'error', fn: (e: HubError) => void): () => void;
  /** Messages of one event name. */
  on(event: string, fn: (m: Envelope) => void): () => void;
  /** Resolves to the stored message's id; retries never store twice. */
  publish(data: unknown, options?: { event?: string }): Promise<number>;
  close(): void;
}

export function connect(url: string | URL, options?: ConnectOptions): Room;
export function chooseTransport(hints?: Hints): Transport;
export function backoffDelay(attempt: number, baseMs?: number, capMs?: number): number;
