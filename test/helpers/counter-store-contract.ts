// One contract for every counter store: the memory store and the Redis store
// (a single server and a cluster) run these same cases, so shared counting
// behaves exactly as counting in one process does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { CounterStore, CountRequest, StoreRule } from '../../src/limit/counter-store.js';
import { add, WindowSpec } from '../../src/limit/sliding-window.js';

/** Makes a fresh, empty store for the rules; the suite closes it. */
export type MakeStore = (rules: readonly StoreRule[]) => Promise<CounterStore>;

/** A window of 10 s: buckets of 1 s. */
const W = 10_000;
/** A wall-clock time on a bucket boundary. */
const T0 = 1_700_000_000_000;

const rule = (name: string, limit: number, windowMs = W): StoreRule => ({ name, limit, window: new WindowSpec(windowMs) });

const one = (client: string, at: number, hits: number[] = [1]): CountRequest => ({ client, at, hits });

async function withStore(make: MakeStore, rules: readonly StoreRule[], fn: (s: CounterStore) => Promise<void>): Promise<void> {
  const store = await make(rules);
  try {
    await fn(store);
  } finally {
    await store.close();
  }
}

/** Counts one request and returns its result. */
async function hit(s: CounterStore, req: CountRequest) {
  const [r] = await s.count([req]);
  assert.ok(r, 'one result per request');
  return r;
}

/** Registers the contract's tests for a store. */
export function counterStoreContract(make: MakeStore): void {
  test('counts each hit and trips on limit + 1, reporting the count', async () => {
    await withStore(make, [rule('r', 3)], async (s) => {
      for (let i = 1; i <= 3; i++) assert.deepEqual(await hit(s, one('192.0.2.1', T0 + i)), { counts: [i], tripped: false });
      assert.deepEqual(await hit(s, one('192.0.2.1', T0 + 4)), { counts: [4], tripped: true });
    });
  });

  test('after a trip the client starts from zero on every rule', async () => {
    await withStore(make, [rule('a', 2), rule('b', 100)], async (s) => {
      for (let i = 0; i < 2; i++) await hit(s, one('192.0.2.1', T0, [1, 1]));
      assert.deepEqual(await hit(s, one('192.0.2.1', T0, [1, 1])), { counts: [3, 3], tripped: true });
      assert.deepEqual(await hit(s, one('192.0.2.1', T0 + 1, [1, 1])), { counts: [1, 1], tripped: false });
    });
  });

  test('a burst of limit + 1 inside one window is caught wherever it falls', async () => {
    const limit = 5;
    await withStore(make, [rule('r', limit)], async (s) => {
      for (const offset of [0, 1, 999, 1000, 4321, 9999]) {
        const client = `198.51.100.${offset % 250}`;
        const start = T0 + offset;
        // limit + 1 hits spread over exactly one window: the first at start, the last at start + W.
        let last = null;
        for (let i = 0; i <= limit; i++) last = await hit(s, one(client, start + Math.round((i * W) / limit)));
        assert.equal(last?.tripped, true, `a burst starting ${offset} ms into a bucket`);
      }
    });
  });

  test('hits within the window are always counted; hits 1.1 windows apart never are', async () => {
    await withStore(make, [rule('r', 100)], async (s) => {
      await hit(s, one('192.0.2.1', T0));
      assert.deepEqual((await hit(s, one('192.0.2.1', T0 + W))).counts, [2]);
      await hit(s, one('192.0.2.2', T0));
      assert.deepEqual((await hit(s, one('192.0.2.2', T0 + W + W / 10))).counts, [1]);
    });
  });

  test('a steady rate under 90% of limit/window never trips', async () => {
    const limit = 10;
    await withStore(make, [rule('r', limit)], async (s) => {
      const interval = W / (0.9 * limit);
      for (let i = 0; i < 60; i++) {
        const r = await hit(s, one('192.0.2.1', T0 + 337 + Math.round(i * interval)));
        assert.equal(r.tripped, false, `hit ${i}: count ${String(r.counts[0])}`);
      }
    });
  });

  test('n hits in one request count as n hits at that time', async () => {
    await withStore(make, [rule('r', 100)], async (s) => {
      for (let i = 0; i < 4; i++) await hit(s, one('192.0.2.1', T0 + 500));
      assert.deepEqual(await hit(s, one('192.0.2.2', T0 + 500, [4])), { counts: [4], tripped: false });
      assert.deepEqual((await hit(s, one('192.0.2.2', T0 + 600))).counts, (await hit(s, one('192.0.2.1', T0 + 600))).counts);
    });
  });

  test('clients and rules are counted apart; a rule without hits reports 0', async () => {
    await withStore(make, [rule('a', 100), rule('b', 100)], async (s) => {
      await hit(s, one('192.0.2.1', T0, [2, 0]));
      assert.deepEqual(await hit(s, one('192.0.2.1', T0, [1, 1])), { counts: [3, 1], tripped: false });
      assert.deepEqual(await hit(s, one('192.0.2.2', T0, [0, 1])), { counts: [0, 1], tripped: false });
    });
  });

  test('IPv6 network clients are counted like any other', async () => {
    await withStore(make, [rule('r', 2)], async (s) => {
      await hit(s, one('2001:db8:1::/64', T0));
      await hit(s, one('2001:db8:1::/64', T0));
      assert.equal((await hit(s, one('2001:db8:1::/64', T0))).tripped, true);
      assert.equal((await hit(s, one('2001:db8:2::/64', T0))).tripped, false);
    });
  });

  test('a batch is counted in order, the same client twice included', async () => {
    await withStore(make, [rule('r', 100)], async (s) => {
      const results = await s.count([one('192.0.2.1', T0), one('192.0.2.2', T0), one('192.0.2.1', T0 + 1)]);
      assert.deepEqual(results.map((r) => r.counts[0]), [1, 1, 2]);
    });
  });

  test('forget clears a client on every rule', async () => {
    await withStore(make, [rule('a', 100), rule('b', 100)], async (s) => {
      await hit(s, one('192.0.2.1', T0, [3, 3]));
      await s.forget('192.0.2.1');
      assert.deepEqual((await hit(s, one('192.0.2.1', T0, [1, 1]))).counts, [1, 1]);
    });
  });

  test('a hit older than the newest bucket is counted in it: later, never lost', async () => {
    await withStore(make, [rule('r', 100)], async (s) => {
      await hit(s, one('192.0.2.1', T0 + 5000));
      assert.deepEqual((await hit(s, one('192.0.2.1', T0 + 1000))).counts, [2]);
      // Bucket 15 still holds bucket 5; bucket 16 no longer does.
      assert.deepEqual((await hit(s, one('192.0.2.1', T0 + 15_500))).counts, [3]);
      assert.deepEqual((await hit(s, one('192.0.2.1', T0 + 16_000))).counts, [2]);
    });
  });

  test('agrees with sliding-window.ts on random sequences of hits', async () => {
    const windows = [W, 1000, 120_000];
    let run = 0;
    await withStore(make, windows.map((w, i) => rule(`w${i}`, 1_000_000, w)), async (s) => {
      await fc.assert(fc.asyncProperty(
        fc.array(fc.record({ gap: fc.integer({ min: -3000, max: 30_000 }), n: fc.integer({ min: 1, max: 3 }) }), { minLength: 1, maxLength: 25 }),
        async (steps) => {
          const client = `203.0.113.${run++ % 250}`;
          await s.forget(client);
          const specs = windows.map((w) => new WindowSpec(w));
          const stride = specs.reduce((n, spec) => n + spec.stride, 0);
          const state = new Uint32Array(stride);
          let at = T0 + 123;
          for (const step of steps) {
            at = Math.max(T0, at + step.gap);
            let offset = 0;
            const expected = specs.map((spec) => {
              let c = 0;
              for (let k = 0; k < step.n; k++) c = add(state, offset, spec, at);
              offset += spec.stride;
              return c;
            });
            const r = await hit(s, one(client, at, windows.map(() => step.n)));
            assert.deepEqual(r.counts, expected);
          }
        },
      ), { numRuns: 30 });
    });
  });
}
