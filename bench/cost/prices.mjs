// Cloudflare's published prices (Workers Paid plan, Standard usage model,
// and Durable Objects with the SQLite storage backend) and the one pure
// function that turns a month of usage into a bill. Nothing here measures
// or starts anything; bench/cost.mjs feeds it measured usage.
//
// Read on 2026-12-01 from (neither page carries a price date of its own):
//   https://developers.cloudflare.com/workers/platform/pricing/
//   https://developers.cloudflare.com/durable-objects/platform/pricing/
// Change PRICES_READ with the numbers when they are read again.
//
// Invariants: the included amounts are per account and per month, so they
// are taken off once, from the whole deployment's totals (never per room);
// the $5 minimum is the Workers Paid subscription, which the included
// amounts come with, so a bill is $5 plus the overage beyond them.

export const PRICES_READ = '2026-12-01';

export const PRICE_SOURCES = {
  workers: 'https://developers.cloudflare.com/workers/platform/pricing/',
  durableObjects: 'https://developers.cloudflare.com/durable-objects/platform/pricing/',
};

export const PRICES = {
  /** Workers Paid: the monthly minimum ("a minimum charge of $5 USD per month for an account"). */
  subscription: 5.0,
  /** Workers Standard: inbound requests to the Worker. */
  workerRequests: { included: 10e6, usdPerMillion: 0.3 },
  /** Workers Standard: CPU milliseconds of the Worker (not of Durable Objects, which bill duration). */
  workerCpuMs: { included: 30e6, usdPerMillion: 0.02 },
  /** Durable Objects: HTTP requests, RPC sessions, WebSocket messages (20:1, below) and alarm invocations. */
  doRequests: { included: 1e6, usdPerMillion: 0.15 },
  /** "a 20:1 ratio is applied to incoming WebSocket messages" (outgoing messages are free). */
  wsMessagesPerRequest: 20,
  /** Durable Objects duration, in GB-s, while an object is active and cannot hibernate. */
  doGbSeconds: { included: 400_000, usdPerMillion: 12.5 },
  /** Every object is billed for 128 MB; the page's own examples multiply by "128 MB / 1 GB" = 0.128. */
  doGbPerObject: 0.128,
  /** SQLite storage backend. */
  rowsRead: { included: 25e9, usdPerMillion: 0.001 },
  rowsWritten: { included: 50e6, usdPerMillion: 1.0 },
  storedGbMonth: { included: 5, usdPerUnit: 0.2 },
};

/** The overage of `amount` over `included`, priced per million (or per unit). */
function over(amount, { included, usdPerMillion, usdPerUnit }) {
  const extra = Math.max(0, amount - included);
  return usdPerUnit !== undefined ? extra * usdPerUnit : (extra / 1e6) * usdPerMillion;
}

/**
 * One month's bill for an account from its totals for the month:
 * { workerRequests, workerCpuMs, doRequests (HTTP requests reaching
 * objects), wsMessagesIn, alarms, awakeSeconds (summed over objects),
 * rowsRead, rowsWritten, storedGb (average over the month) }.
 * Returns { workerRequests, workerCpu, doRequests, doDuration, storage,
 * subscription, total } in USD: each usage line is its overage (the
 * included amounts are the subscription's), total = subscription + lines.
 */
export function monthlyBill(u, prices = PRICES) {
  const doRequestUnits = u.doRequests + u.alarms + u.wsMessagesIn / prices.wsMessagesPerRequest;
  const lines = {
    workerRequests: over(u.workerRequests, prices.workerRequests),
    workerCpu: over(u.workerCpuMs ?? 0, prices.workerCpuMs),
    doRequests: over(doRequestUnits, prices.doRequests),
    doDuration: over(u.awakeSeconds * prices.doGbPerObject, prices.doGbSeconds),
    storage:
      over(u.rowsRead, prices.rowsRead) +
      over(u.rowsWritten, prices.rowsWritten) +
      over(u.storedGb, prices.storedGbMonth),
  };
  const total = prices.subscription + Object.values(lines).reduce((a, b) => a + b, 0);
  return { ...lines, subscription: prices.subscription, total };
}

export const SECONDS_PER_MONTH = 30 * 24 * 3600;

/**
 * A month's totals for `rooms` rooms from measured rates per room-second
 * (every field of monthlyBill's input but storedGb, which is per room and
 * not a rate: `storedBytesPerRoom`). Linear in rooms: rooms are
 * independent objects, so n rooms do n times what one does.
 */
export function monthOfRooms(perRoomSecond, storedBytesPerRoom, rooms, seconds = SECONDS_PER_MONTH) {
  const t = {};
  for (const [k, v] of Object.entries(perRoomSecond)) t[k] = v * rooms * seconds;
  t.storedGb = (storedBytesPerRoom * rooms) / 1e9;
  return t;
}
