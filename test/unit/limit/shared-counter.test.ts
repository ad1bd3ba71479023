import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAddress, type Network } from '../../../src/address.js';
import { MemoryCounterStore, type CounterStore, type CountRequest, type CountResult } from '../../../src/limit/counter-store.js';
import { WindowSpec } from '../../../src/limit/sliding-window.js';
import { SharedCounter, type SharedCounterOptions } from '../../../src/limit/shared-counter.js';
import { waitFor } from '../../helpers/wait-for.js';

const T0 = 1_700_000_000_000;

function addr(text: string): Network {
  const n = parseAddress(text);
  assert.ok(n, text);
  return n;
}

const rules = [
  { name: 'short', limit: 3, window: new WindowSpec(10_000) },
  { name: 'long', limit: 3, window: new WindowSpec(10_000) },
];

/** A store that records batches and answers only when told. */
class HeldStore implements CounterStore {
  readonly rules = rules;
  readonly batches: CountRequest[][] = [];
  private readonly waiting: Array<(r: CountResult[] | Error) => void> = [];
  count(batch: readonly CountRequest[]): Promise<CountResult[]> {
    this.batches.push([...batch]);
    return new Promise((resolve, reject) => {
      this.waiting.push((r) => (r instanceof Error ? reject(r) : resolve(r)));
    });
  }
  answer(r: CountResult[] | Error): void {
    const next = this.waiting.shift();
    assert.ok(next, 'a batch is waiting');
    next(r);
  }
  get held(): number {
    return this.waiting.length;
  }
  async forget(): Promise<void> {}
  async close(): Promise<void> {}
}

function counter(store: CounterStore, over: Partial<SharedCounterOptions> = {}) {
  const trips: Array<[string, number, number]> = [];
  const failures: unknown[] = [];
  let up = true;
  const c = new SharedCounter({
    store,
    blockMs: [60_000, 3_600_000],
    isUp: () => up,
    onTrip: (client, rule, hits) => trips.push([client.text, rule, hits]),
    onFailure: (err) => failures.push(err),
    wallClock: (at) => T0 + at,
    flushMs: 5,
    ...over,
  });
  return { c, trips, failures, setUp: (v: boolean) => { up = v; } };
}

test('add() never waits: hits are gathered per client and sent as one request each', async () => {
  const store = new HeldStore();
  const { c } = counter(store, { flushMs: 60_000 });
  c.add(addr('192.0.2.1'), 0, 10);
  c.add(addr('192.0.2.1'), 0, 11);
  c.add(addr('192.0.2.1'), 1, 12);
  c.add(addr('192.0.2.2'), 0, 13);
  assert.equal(store.batches.length, 0, 'nothing sent before the tick');
  c.flush();
  assert.deepEqual(store.batches, [[
    { client: '192.0.2.1', hits: [2, 1], at: T0 + 12 },
    { client: '192.0.2.2', hits: [1, 0], at: T0 + 13 },
  ]]);
  store.answer([{ counts: [2, 1], tripped: false }, { counts: [1, 0], tripped: false }]);
  await c.drain();
  assert.equal(c.stats.hits, 4);
});

test('a batch goes out by itself after flushMs, or at once when maxBatch clients wait', async () => {
  const store = new MemoryCounterStore(rules);
  const { c } = counter(store, { flushMs: 5, maxBatch: 2 });
  c.add(addr('192.0.2.1'), 0, 0);
  c.add(addr('192.0.2.2'), 0, 0);
  assert.equal(c.stats.batches, 1, 'two clients fill a batch');
  c.add(addr('192.0.2.3'), 0, 0);
  await waitFor(() => c.stats.batches === 2, { what: 'the timer to send the rest' });
  await c.close();
});

test('a trip is reported once, for the rule with the longest block', async () => {
  const store = new MemoryCounterStore(rules);
  const { c, trips } = counter(store);
  for (let i = 0; i < 4; i++) {
    c.add(addr('192.0.2.1'), 0, i);
    c.add(addr('192.0.2.1'), 1, i);
  }
  await c.drain();
  assert.deepEqual(trips, [['192.0.2.1', 1, 4]]);
  assert.equal(c.stats.trips, 1);
});

test('a failed batch is reported and its hits are not retried', async () => {
  const store = new HeldStore();
  const { c, failures } = counter(store);
  c.add(addr('192.0.2.1'), 0, 0);
  c.flush();
  store.answer(new Error('Connection is closed.'));
  await c.drain();
  assert.equal(failures.length, 1);
  assert.equal(c.stats.failed, 1);
  assert.equal(store.batches.length, 1);
});

test('while the store is down hits are only counted locally', async () => {
  const store = new HeldStore();
  const { c, setUp } = counter(store);
  setUp(false);
  c.add(addr('192.0.2.1'), 0, 0);
  c.flush();
  assert.equal(store.batches.length, 0);
  assert.equal(c.stats.skipped, 1);
});

test('batches in flight are bounded; waiting clients are bounded too', async () => {
  const store = new HeldStore();
  const { c } = counter(store, { maxBatch: 1, maxInFlight: 2, maxPending: 3 });
  for (let i = 1; i <= 10; i++) c.add(addr(`192.0.2.${i}`), 0, 0);
  assert.equal(store.held, 2, 'two batches in flight');
  assert.equal(c.stats.skipped, 5, 'three wait, five are left to the local counters');
  store.answer([{ counts: [1, 0], tripped: false }]);
  store.answer([{ counts: [1, 0], tripped: false }]);
  await waitFor(() => store.batches.length === 4, { what: 'the waiting ones to follow as slots free up' });
  await waitFor(() => {
    while (store.held > 0) store.answer([{ counts: [1, 0], tripped: false }]);
    return store.batches.length === 5;
  }, { what: 'the last waiting client to be sent' });
  while (store.held > 0) store.answer([{ counts: [1, 0], tripped: false }]);
  await c.drain();
  assert.equal(store.batches.length, 5);
});
