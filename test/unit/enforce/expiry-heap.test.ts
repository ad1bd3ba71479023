import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ExpiryHeap } from '../../../src/enforce/expiry-heap.js';

test('due() yields exactly the entries due, soonest first, whatever the order they came in', () => {
  fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 1000 }), { maxLength: 300 }), fc.integer({ min: 0, max: 1000 }), (times, now) => {
    const heap = new ExpiryHeap<number>();
    times.forEach((t, i) => heap.push(t, i));
    const due = [...heap.due(now)].map(([t]) => t);
    assert.deepEqual(due, times.filter((t) => t <= now).sort((a, b) => a - b));
    assert.equal(heap.size, times.filter((t) => t > now).length);
    const rest = [...heap.due(Infinity)].map(([t]) => t);
    assert.deepEqual(rest, times.filter((t) => t > now).sort((a, b) => a - b));
  }));
});

test('rebuild keeps what it is told to, still in order', () => {
  const heap = new ExpiryHeap<string>();
  for (let i = 0; i < 100; i++) heap.push(100 - i, `b${i}`);
  heap.rebuild((at) => at % 2 === 0);
  assert.equal(heap.size, 50);
  assert.deepEqual([...heap.due(10)].map(([t]) => t), [2, 4, 6, 8, 10]);
});
