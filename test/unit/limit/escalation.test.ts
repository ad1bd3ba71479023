import { test } from 'node:test';
import assert from 'node:assert/strict';
import { blockDuration, nextOffence, remembered, type Escalation } from '../../../src/limit/escalation.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const esc: Escalation = { factor: 2, maxMs: 7 * DAY, memoryMs: 7 * DAY };

test('a first offence starts the count at 1', () => {
  assert.deepEqual(nextOffence(undefined, 1_000, esc.memoryMs), { count: 1, lastAt: 1_000 });
});

test('offences within memory add up', () => {
  let o = nextOffence(undefined, 0, esc.memoryMs);
  o = nextOffence(o, 6 * HOUR, esc.memoryMs);
  assert.deepEqual(o, { count: 2, lastAt: 6 * HOUR });
  o = nextOffence(o, 6 * HOUR + 7 * DAY - 1, esc.memoryMs);
  assert.deepEqual(o, { count: 3, lastAt: 6 * HOUR + 7 * DAY - 1 });
});

test('memory expires: an offence older than memory starts over at 1', () => {
  const o = { count: 4, lastAt: 1_000 };
  assert.deepEqual(nextOffence(o, 1_000 + 7 * DAY, esc.memoryMs), { count: 1, lastAt: 1_000 + 7 * DAY });
  assert.equal(remembered(o, 1_000 + 7 * DAY - 1, esc.memoryMs), true);
  assert.equal(remembered(o, 1_000 + 7 * DAY, esc.memoryMs), false);
  assert.deepEqual(nextOffence(o, 2_000, 0), { count: 1, lastAt: 2_000 }, 'memory 0 disables escalation');
});

test('each remembered offence multiplies the block by the factor', () => {
  const base = 6 * HOUR;
  assert.equal(blockDuration(base, { count: 1, lastAt: 0 }, esc), 6 * HOUR);
  assert.equal(blockDuration(base, { count: 2, lastAt: 0 }, esc), 12 * HOUR);
  assert.equal(blockDuration(base, { count: 3, lastAt: 0 }, esc), DAY);
  assert.equal(blockDuration(base, { count: 2, lastAt: 0 }, { ...esc, factor: 1.5 }), 9 * HOUR);
  assert.equal(blockDuration(base, { count: 5, lastAt: 0 }, { ...esc, factor: 1 }), base, 'factor 1: no escalation');
});

test('escalated blocks are capped at max', () => {
  const base = 6 * HOUR;
  assert.equal(blockDuration(base, { count: 5, lastAt: 0 }, esc), 4 * DAY);
  assert.equal(blockDuration(base, { count: 6, lastAt: 0 }, esc), 7 * DAY);
  assert.equal(blockDuration(base, { count: 60, lastAt: 0 }, esc), 7 * DAY);
  assert.equal(blockDuration(base, { count: 5000, lastAt: 0 }, esc), 7 * DAY, 'no overflow to Infinity or NaN');
});

test('a block is never shorter than the rule’s own, even when max is', () => {
  assert.equal(blockDuration(DAY, { count: 1, lastAt: 0 }, { ...esc, maxMs: HOUR }), DAY);
  assert.equal(blockDuration(DAY, { count: 3, lastAt: 0 }, { ...esc, maxMs: HOUR }), DAY);
});
