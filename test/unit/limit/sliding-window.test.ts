import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { add, count, reset, WindowSpec } from '../../../src/limit/sliding-window.js';

const LIMITS = [1, 2, 5, 10, 100, 360];
const WINDOWS = [7, 1000, 1001, 60_000, 120_000, 3_600_000];

function fresh(spec: WindowSpec, rules = 1): Uint32Array {
  return new Uint32Array(spec.stride * rules);
}

test('limit+1 hits within one window trip at every phase of the burst against bucket boundaries', () => {
  for (const limit of [1, 2, 5, 10, 100]) {
    for (const windowMs of [10, 1000, 1001, 120_000]) {
      const spec = new WindowSpec(windowMs);
      const bucket = windowMs / spec.buckets;
      const steps = 25;
      for (let step = 0; step < steps; step++) {
        const phase = Math.floor((step * bucket) / steps);
        for (const base of [0, 1000 * windowMs]) {
          // Spread as wide as the rule allows: the first and last hit exactly one window apart.
          const state = fresh(spec);
          let last = 0;
          for (let k = 0; k <= limit; k++) {
            const at = base + phase + Math.floor((k * windowMs) / limit);
            last = add(state, 0, spec, at);
            assert.equal(last, k + 1, `limit ${limit}, window ${windowMs}, phase ${phase}, hit ${k}`);
          }
          assert.ok(last > limit);
          // All at once.
          const burst = fresh(spec);
          for (let k = 0; k <= limit; k++) last = add(burst, 0, spec, base + phase);
          assert.equal(last, limit + 1);
        }
      }
    }
  }
});

test('a steady rate at 89.9% of limit/window never trips over 20 windows', () => {
  for (const limit of LIMITS) {
    for (const windowMs of WINDOWS) {
      const spec = new WindowSpec(windowMs);
      const period = windowMs / (0.899 * limit);
      for (const phase of [0, period / 3, windowMs / spec.buckets / 2, 0.5, 12_345.678]) {
        const state = fresh(spec);
        let max = 0;
        for (let k = 0; k * period <= 20 * windowMs; k++) {
          max = Math.max(max, add(state, 0, spec, phase + k * period));
        }
        assert.ok(max <= limit, `limit ${limit}, window ${windowMs}, phase ${phase}: reached ${max}`);
      }
    }
  }
});

test('a steady rate of limit+1 per window is caught within two windows', () => {
  for (const limit of LIMITS) {
    for (const windowMs of WINDOWS) {
      const spec = new WindowSpec(windowMs);
      const period = windowMs / (limit + 1);
      const state = fresh(spec);
      let tripped = -1;
      for (let k = 0; tripped < 0 && k * period <= 2 * windowMs; k++) {
        if (add(state, 0, spec, 777 + k * period) > limit) tripped = k;
      }
      assert.ok(tripped >= limit, `limit ${limit}, window ${windowMs}: tripped at hit ${tripped}`);
    }
  }
});

test('the count is at least the hits of the last window and at most those of the last 1.1 windows', () => {
  fc.assert(fc.property(
    fc.integer({ min: 1, max: 100_000 }),
    fc.integer({ min: 0, max: 1e9 }),
    fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 200 }),
    (windowMs, start, gaps) => {
      const spec = new WindowSpec(windowMs);
      const state = fresh(spec);
      const times: number[] = [];
      let t = start;
      for (const g of gaps) {
        // Integer times, gaps of up to half a window, often 0.
        t += Math.floor(g * g * windowMs * 0.5);
        times.push(t);
        const c = add(state, 0, spec, t);
        const exact = times.filter((h) => h >= t - windowMs).length;
        const loose = times.filter((h) => h > t - windowMs * 1.1).length;
        assert.ok(c >= exact && c <= loose, `count ${c}, exact ${exact}, loose ${loose}`);
        assert.equal(count(state, 0, spec, t), c);
      }
    },
  ), { numRuns: 300 });
});

test('counts decay to 0 after an idle gap longer than a window', () => {
  const spec = new WindowSpec(60_000);
  const state = fresh(spec);
  for (let k = 0; k < 50; k++) add(state, 0, spec, 5_000 + k * 100);
  const last = 5_000 + 49 * 100;
  assert.equal(count(state, 0, spec, last), 50);
  assert.equal(count(state, 0, spec, 5_000 + 60_000), 50);
  // Somewhere between W and 1.1·W after the last hit the hits fall out, then stay out.
  assert.equal(count(state, 0, spec, last + 66_001), 0);
  assert.equal(count(state, 0, spec, last + 10 * 60_000), 0);
  assert.equal(add(state, 0, spec, last + 66_001), 1);
  // count() does not move the window: the state still answers for earlier times.
  const probe = fresh(spec);
  add(probe, 0, spec, 1_000);
  assert.equal(count(probe, 0, spec, 200_000), 0);
  assert.equal(count(probe, 0, spec, 1_000), 1);
});

test('hits leave the window bucket by bucket', () => {
  const spec = new WindowSpec(1000);
  const state = fresh(spec);
  for (let k = 0; k < 10; k++) add(state, 0, spec, k * 100);
  assert.equal(count(state, 0, spec, 999), 10);
  for (let k = 0; k < 10; k++) assert.equal(count(state, 0, spec, 1100 + k * 100), 9 - k, `at ${1100 + k * 100}`);
});

test('large time jumps and time starting at 0', () => {
  const spec = new WindowSpec(120_000);
  const state = fresh(spec);
  assert.equal(add(state, 0, spec, 0), 1);
  assert.equal(add(state, 0, spec, 0), 2);
  assert.equal(add(state, 0, spec, 0.25), 3);
  assert.equal(add(state, 0, spec, 1e12), 1);
  assert.equal(add(state, 0, spec, 1e12 + 1), 2);
  assert.equal(add(state, 0, spec, 2 ** 52), 1);
  assert.equal(count(state, 0, spec, 2 ** 52 + 119_000), 1);
  assert.equal(count(state, 0, spec, 2 ** 52 + 200_000), 0);
});

test('the stored bucket index wraps without losing or inventing hits', () => {
  // 1 ms buckets: the 32-bit index wraps after about 50 days.
  const spec = new WindowSpec(10);
  const wrapAt = spec.modulus; // in ms, since a bucket is 1 ms
  assert.equal(spec.modulus % spec.ring, 0);
  const state = fresh(spec);
  const times: number[] = [];
  for (let t = wrapAt - 30; t < wrapAt + 30; t += 0.7) {
    times.push(t);
    const c = add(state, 0, spec, t);
    const exact = times.filter((h) => h >= t - 10).length;
    const loose = times.filter((h) => h > t - 11).length;
    assert.ok(c >= exact && c <= loose, `at ${t}: count ${c}, exact ${exact}, loose ${loose}`);
  }
  assert.equal(count(state, 0, spec, wrapAt + 100), 0);
  // An idle client seen again after the wrap starts from zero.
  const idle = fresh(spec);
  add(idle, 0, spec, wrapAt - 5);
  add(idle, 0, spec, wrapAt - 4);
  assert.equal(add(idle, 0, spec, wrapAt + 20), 1);
});

test('a hit older than the newest bucket is counted, in the newest bucket', () => {
  const spec = new WindowSpec(1000);
  const state = fresh(spec);
  add(state, 0, spec, 5_000);
  assert.equal(add(state, 0, spec, 4_850), 2);
  assert.equal(count(state, 0, spec, 5_950), 2);
  assert.equal(count(state, 0, spec, 6_100), 0);
  // A fresh state late on the clock (stored index far "ahead" of 0) still starts cleanly.
  const late = fresh(spec);
  const t = (spec.modulus / 2 + 1000) * 100;
  assert.equal(add(late, 0, spec, t), 1);
  assert.equal(add(late, 0, spec, t + 1500), 1);
});

test('rules share one array without touching each other, and reset clears one rule', () => {
  const a = new WindowSpec(1000);
  const b = new WindowSpec(60_000, 20);
  const state = new Uint32Array(a.stride + b.stride);
  for (let k = 0; k < 5; k++) add(state, 0, a, k);
  for (let k = 0; k < 3; k++) add(state, a.stride, b, k);
  assert.equal(count(state, 0, a, 10), 5);
  assert.equal(count(state, a.stride, b, 10), 3);
  reset(state, 0, a);
  assert.equal(count(state, 0, a, 10), 0);
  assert.equal(count(state, a.stride, b, 10), 3);
  assert.equal(b.stride, 22);
});

test('WindowSpec rejects unusable shapes', () => {
  assert.throws(() => new WindowSpec(0), /windowMs must be a positive number of milliseconds, got 0/);
  assert.throws(() => new WindowSpec(Number.NaN), /windowMs/);
  assert.throws(() => new WindowSpec(1000, 0), /buckets must be an integer from 1 to 1000, got 0/);
  assert.equal(new WindowSpec(1000).buckets, 10);
  assert.equal(new WindowSpec(1000).stride, 12);
});
