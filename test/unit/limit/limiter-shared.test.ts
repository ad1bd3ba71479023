// The limiter's hooks for shared counting: every counted hit is handed on,
// and a trip found in the shared count blocks the client as a local one does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAddress, parseNetwork, type Network } from '../../../src/address.js';
import { AllowList } from '../../../src/limit/allow.js';
import { Limiter, type Verdict } from '../../../src/limit/limiter.js';

const HOUR = 3_600_000;

function addr(text: string): Network {
  const n = parseAddress(text);
  assert.ok(n, text);
  return n;
}

function setup() {
  const verdicts: Verdict[] = [];
  const counted: Array<[string, number, number]> = [];
  const blocked = new Set<string>();
  const limiter = new Limiter({
    rules: [
      { name: 'all', match: {}, limit: 100, windowMs: 60_000, blockMs: HOUR },
      { name: 'login', match: { path: '/login' }, limit: 100, windowMs: 60_000, blockMs: 24 * HOUR },
    ],
    allow: new AllowList([parseNetwork('127.0.0.0/8') as Network]),
    ipv6Prefix: 64,
    maxClients: 1000,
    escalation: { factor: 2, maxMs: 7 * 24 * HOUR, memoryMs: 7 * 24 * HOUR },
    isBlocked: (c) => blocked.has(c.text),
    onVerdict: (v) => {
      verdicts.push(v);
      blocked.add(v.client.text);
    },
    onCount: (client, rule, at) => counted.push([client.text, rule, at]),
    now: () => 1_700_000_000_000,
  });
  return { limiter, verdicts, counted, blocked };
}

test('every hit a rule counts is handed on, with the client as counted and the rule index', () => {
  const { limiter, counted } = setup();
  limiter.record({ ip: addr('192.0.2.1'), uri: '/login', at: 5 });
  limiter.record({ ip: addr('2001:db8::7'), uri: '/', at: 6 });
  limiter.record({ ip: addr('127.0.0.1'), uri: '/', at: 7 });
  assert.deepEqual(counted, [['192.0.2.1', 0, 5], ['192.0.2.1', 1, 5], ['2001:db8::/64', 0, 6]]);
});

test('a shared trip blocks the client once, with escalation, and resets its local counters', () => {
  const { limiter, verdicts } = setup();
  for (let i = 0; i < 50; i++) limiter.record({ ip: addr('192.0.2.1'), uri: '/login', at: i });
  assert.equal(limiter.tracked(), 1);
  assert.equal(limiter.convictShared(addr('192.0.2.1'), 1, 101), true);
  assert.equal(limiter.tracked(), 0, 'its counters start from zero');
  assert.equal(verdicts.length, 1);
  const v = verdicts[0];
  assert.ok(v);
  assert.equal(v.rule, 'login');
  assert.equal(v.hits, 101);
  assert.equal(v.blockMs, 24 * HOUR);
  assert.equal(v.reason, '101 requests in 60s');
  assert.equal(limiter.convictShared(addr('192.0.2.1'), 1, 102), false, 'already blocked');
  assert.equal(limiter.convictShared(addr('127.0.0.1'), 0, 500), false, 'allow-listed');
  assert.equal(limiter.convictShared(addr('192.0.2.9'), 7, 500), false, 'no such rule');
  assert.equal(verdicts.length, 1);
  assert.equal(limiter.offenceOf(addr('192.0.2.1'))?.count, 1);
});
