// The cost command's price arithmetic (bench/cost/prices.mjs), against the
// worked examples of Cloudflare's own pricing pages, so that `npm run cost`
// cannot quietly drift from them. Pure: starts nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { monthlyBill, monthOfRooms, SECONDS_PER_MONTH } from '../bench/cost/prices.mjs';

const nothing = { workerRequests: 0, workerCpuMs: 0, doRequests: 0, wsMessagesIn: 0, alarms: 0, awakeSeconds: 0, rowsRead: 0, rowsWritten: 0, storedGb: 0 };
const close = (actual, expected) => assert.ok(Math.abs(actual - expected) < 0.005, `${actual} ≠ ${expected}`);

test('an account within every included amount pays the $5 minimum', () => {
  const b = monthlyBill({ ...nothing, workerRequests: 10e6, doRequests: 1e6, awakeSeconds: 400_000 / 0.128, rowsWritten: 50e6, storedGb: 5 });
  assert.equal(b.total, 5);
});

test("the Workers page's example: 15 M requests at 7 ms CPU is $8.00", () => {
  const b = monthlyBill({ ...nothing, workerRequests: 15e6, workerCpuMs: 7 * 15e6 });
  close(b.workerRequests, 1.5);
  close(b.workerCpu, 1.5);
  close(b.total, 8);
});

test("the Durable Objects page's duration example: 4,320,000 s at 128 MB is $1.91 over the included", () => {
  close(monthlyBill({ ...nothing, awakeSeconds: 4_320_000 }).doDuration, 1.91);
});

test('incoming WebSocket messages bill at 20:1 and alarms as requests', () => {
  // 20 M messages = 1 M requests (all included); 40 M + 0.5 M alarms = 2.5 M: 1.5 M over.
  close(monthlyBill({ ...nothing, wsMessagesIn: 20e6 }).doRequests, 0);
  close(monthlyBill({ ...nothing, wsMessagesIn: 40e6, alarms: 0.5e6 }).doRequests, 1.5 * 0.15);
});

test('a month of rooms is linear in rooms and in time', () => {
  const one = monthOfRooms({ doRequests: 0.5, awakeSeconds: 1 }, 32768, 1);
  const ten = monthOfRooms({ doRequests: 0.5, awakeSeconds: 1 }, 32768, 10);
  assert.equal(one.doRequests, 0.5 * SECONDS_PER_MONTH);
  assert.equal(ten.awakeSeconds, 10 * SECONDS_PER_MONTH);
  assert.equal(ten.storedGb, (10 * 32768) / 1e9);
});
