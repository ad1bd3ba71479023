import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatDuration, formatSpan, parseDuration } from '../../src/duration.js';

test('durations parse and format back the way the configuration writes them', () => {
  for (const text of ['90s', '10m', '6h', '1d', '2w']) assert.equal(formatDuration(parseDuration(text) ?? -1), text);
  assert.equal(parseDuration(60), 60_000);
  assert.equal(parseDuration('3651d'), null);
});

test('one format for a block\'s length, whether made here or adopted with its remaining time', () => {
  assert.equal(formatSpan(600_000), '10m');
  assert.equal(formatSpan(599_913), '10m', 'a block adopted from Redis reads like one made here');
  assert.equal(formatSpan(21_600_000), '6h');
  assert.equal(formatSpan(5_400_000), '90m');
  assert.equal(formatSpan(3_599_400), '59m59s');
  assert.equal(formatSpan(90_061_000), '1d1h1m1s');
  assert.equal(formatSpan(400), '0s');
});
