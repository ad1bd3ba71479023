import { test } from 'node:test';
import assert from 'node:assert/strict';
import { unansweredOwner } from '../../../src/redis/connection.js';

const ALL = new Set(['10.0.0.1:7001', '10.0.0.1:7002', '10.0.0.1:7003']);
const SLOTS = [
  [0, 5460, ['10.0.0.1', 7001, 'id1']],
  [5461, 10922, ['10.0.0.1', 7002, 'id2']],
  [10923, 16383, ['10.0.0.1', 7003, 'id3']],
];

test('a cluster is whole when every slot is held by a master that answered', () => {
  assert.equal(unansweredOwner(SLOTS, '10.0.0.1', ALL), null);
});

test('a master that stopped answering is named with its slots, before the cluster notices', () => {
  const two = new Set(['10.0.0.1:7001', '10.0.0.1:7002']);
  assert.equal(unansweredOwner(SLOTS, '10.0.0.1', two), 'master 10.0.0.1:7003, which holds slots 10923-16383, does not answer');
});

test('slots without an owner, an owner announced without a host, and a reply that is not a slot map', () => {
  assert.equal(unansweredOwner(SLOTS.slice(0, 2), '10.0.0.1', ALL), '5461 slots have no master');
  const hostless = [[0, 16383, ['', 7001, 'id1']]];
  assert.equal(unansweredOwner(hostless, '10.0.0.1', ALL), null);
  assert.equal(unansweredOwner(hostless, '10.0.0.9', ALL), 'master 10.0.0.9:7001, which holds slots 0-16383, does not answer');
  assert.equal(unansweredOwner('OK', '10.0.0.1', ALL), 'CLUSTER SLOTS gave no slot map');
});

test('key slots as Redis Cluster computes them: CRC16 of the hash tag or the whole key', async () => {
  const { keySlot } = await import('../../../src/redis/keys.js');
  // CRC16/XMODEM("123456789") = 0x31C3; 12739 = 0x31C3 mod 16384.
  assert.equal(keySlot('123456789'), 12739);
  assert.equal(keySlot('foo'), 12182);
  assert.equal(keySlot('{user1000}.following'), keySlot('{user1000}.followers'));
  assert.equal(keySlot('{user1000}.following'), keySlot('user1000'));
  // An empty tag is no tag: the whole key counts.
  assert.equal(keySlot('foo{}{bar}'), keySlot('foo{}{bar}'));
  assert.notEqual(keySlot('foo{}{bar}'), keySlot('bar'));
  assert.equal(keySlot('foo{{bar}}zap'), keySlot('{bar'));
});
