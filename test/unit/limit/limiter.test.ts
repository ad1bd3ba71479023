import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAddress, type Network } from '../../../src/address.js';
import { AllowList } from '../../../src/limit/allow.js';
import { Limiter, type LimiterOptions, type Verdict } from '../../../src/limit/limiter.js';
import type { Hit, Rule } from '../../../src/limit/rules.js';
import { net } from '../../helpers/net.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

function addr(text: string): Network {
  const n = parseAddress(text);
  assert.ok(n, text);
  return n;
}


/** The n-th verdict, which must exist. */
function nth(verdicts: readonly Verdict[], n: number): Verdict {
  const v = verdicts[n];
  assert.ok(v, `expected at least ${n + 1} verdicts, got ${verdicts.length}`);
  return v;
}

const rule = (over: Partial<Rule> = {}): Rule =>
  ({ name: 'default', match: {}, limit: 3, windowMs: 60_000, blockMs: HOUR, ...over });

/** A limiter on a fake clock, with a blocker that remembers what it was told. */
function setup(over: Partial<LimiterOptions> = {}) {
  const verdicts: Verdict[] = [];
  const blocked = new Set<string>();
  const clock = { wall: 1_700_000_000_000, mono: 0 };
  const limiter = new Limiter({
    rules: [rule()],
    allow: new AllowList([net('127.0.0.0/8'), net('::1')]),
    ipv6Prefix: 64,
    maxClients: 1000,
    escalation: { factor: 2, maxMs: 7 * DAY, memoryMs: 7 * DAY },
    isBlocked: (client) => blocked.has(client.text),
    onVerdict: (v) => verdicts.push(v),
    now: () => clock.wall,
    ...over,
  });
  const hit = (ip: string, fields: Partial<Hit> = {}) => limiter.record({ ip: addr(ip), at: clock.mono, ...fields });
  const hits = (ip: string, n: number, fields: Partial<Hit> = {}) => {
    for (let i = 0; i < n; i++) hit(ip, fields);
  };
  return { limiter, verdicts, blocked, clock, hit, hits };
}

test('the (limit+1)-th hit within the window yields one verdict with every field', () => {
  const { limiter, verdicts, clock, hit } = setup();
  for (let i = 0; i < 3; i++) {
    assert.equal(hit('203.0.113.7'), 'counted');
    clock.mono += 1000;
  }
  assert.equal(verdicts.length, 0);
  assert.equal(hit('203.0.113.7'), 'counted');
  assert.equal(verdicts.length, 1);
  assert.deepEqual(verdicts[0], {
    client: addr('203.0.113.7'),
    rule: 'default',
    hits: 4,
    windowMs: 60_000,
    blockMs: HOUR,
    reason: '4 requests in 60s',
    offence: { count: 1, lastAt: clock.wall },
  });
  assert.equal(limiter.stats.verdicts, 1);
});

test('the reason reads like "361 requests in 120s" with the default rule', () => {
  const { verdicts, hits } = setup({ rules: [rule({ limit: 360, windowMs: 120_000, blockMs: 6 * HOUR })] });
  hits('198.51.100.20', 360);
  assert.equal(verdicts.length, 0);
  hits('198.51.100.20', 1);
  assert.equal(nth(verdicts, 0).reason, '361 requests in 120s');
  assert.equal(nth(verdicts, 0).hits, 361);
});

test('hits spread over more than the window do not trip', () => {
  const { verdicts, clock, hit } = setup();
  for (let i = 0; i < 20; i++) {
    hit('203.0.113.7');
    clock.mono += 30_000; // 2 per minute against a limit of 3
  }
  assert.equal(verdicts.length, 0);
});

test('clients are counted apart', () => {
  const { verdicts, hits } = setup();
  hits('203.0.113.1', 3);
  hits('203.0.113.2', 3);
  assert.equal(verdicts.length, 0);
  hits('203.0.113.2', 1);
  assert.deepEqual(verdicts.map((v) => v.client.text), ['203.0.113.2']);
});

test('allow-listed addresses are never counted', () => {
  const { limiter, verdicts, hit, hits } = setup();
  assert.equal(hit('127.0.0.1'), 'allowed');
  hits('127.0.0.1', 1000);
  hits('::1', 1000);
  assert.equal(verdicts.length, 0);
  assert.equal(limiter.tracked(), 0);
});

test('IPv6 addresses of one /64 add up to one client', () => {
  const { limiter, verdicts, hit } = setup();
  hit('2001:db8:1:2::1');
  hit('2001:db8:1:2:ffff:ffff:ffff:ffff');
  hit('2001:db8:1:3::1'); // another /64
  hit('2001:db8:1:2:abcd::9');
  assert.equal(limiter.tracked(), 2);
  assert.equal(verdicts.length, 0);
  hit('2001:db8:1:2::42');
  assert.equal(verdicts.length, 1);
  assert.equal(nth(verdicts, 0).client.text, '2001:db8:1:2::/64');
  assert.equal(nth(verdicts, 0).client.prefix, 64);
  assert.equal(nth(verdicts, 0).hits, 4);
});

test('in a /64 that holds an allowed address, IPv6 clients are counted and blocked one address each', () => {
  const { limiter, verdicts, hits } = setup({ allow: new AllowList([net('2001:db8:5:5::1')]) });
  assert.equal(limiter.record({ ip: addr('2001:db8:5:5::1'), at: 0 }), 'allowed');
  hits('2001:db8:5:5::2', 3);
  hits('2001:db8:5:5::3', 3);
  assert.equal(verdicts.length, 0, 'neighbours in the /64 are separate clients');
  hits('2001:db8:5:5::2', 1);
  assert.equal(verdicts.length, 1);
  assert.equal(nth(verdicts, 0).client.text, '2001:db8:5:5::2');
  assert.equal(nth(verdicts, 0).client.prefix, 128);
  limiter.forget(addr('2001:db8:5:5::3'));
  assert.equal(limiter.tracked(), 0, 'forgetting the address forgets its own counters');
});

test('ipv6Prefix sets how IPv6 clients are grouped', () => {
  const wide = setup({ ipv6Prefix: 48 });
  for (const a of ['2001:db8:1:1::1', '2001:db8:1:2::1', '2001:db8:1:ffff::1', '2001:db8:1:3::9']) wide.hit(a);
  assert.equal(nth(wide.verdicts, 0).client.text, '2001:db8:1::/48');

  const exact = setup({ ipv6Prefix: 128 });
  for (const a of ['2001:db8::1', '2001:db8::2', '2001:db8::3', '2001:db8::4']) exact.hit(a);
  assert.equal(exact.verdicts.length, 0);
  assert.equal(exact.limiter.tracked(), 4);
  exact.hits('2001:db8::1', 3);
  assert.equal(nth(exact.verdicts, 0).client.text, '2001:db8::1');
});

test('a strict rule for POST /login and a default rule count independently', () => {
  const login = rule({ name: 'login', match: { path: '/login', methods: ['POST'] }, limit: 5, windowMs: 60_000, blockMs: DAY });
  const fallback = rule({ name: 'default', limit: 20, windowMs: 60_000, blockMs: HOUR });
  const { verdicts, hit, hits } = setup({ rules: [login, fallback] });
  hits('203.0.113.9', 10, { method: 'GET', uri: '/login' });
  assert.equal(verdicts.length, 0, 'GETs count only against the default rule');
  hits('203.0.113.9', 5, { method: 'POST', uri: '/login?next=/' });
  assert.equal(verdicts.length, 0);
  assert.equal(hit('203.0.113.9', { method: 'POST', uri: '/login' }), 'counted');
  assert.equal(verdicts.length, 1);
  assert.equal(nth(verdicts, 0).rule, 'login');
  assert.equal(nth(verdicts, 0).blockMs, DAY);
  assert.equal(nth(verdicts, 0).hits, 6);

  // The verdict reset every rule: 20 more hits are within the default limit.
  hits('203.0.113.9', 20, { method: 'GET', uri: '/' });
  assert.equal(verdicts.length, 1);
  hit('203.0.113.9', { method: 'GET', uri: '/' });
  assert.equal(nth(verdicts, 1).rule, 'default');
});

test('hits no rule matches are not tracked', () => {
  const { limiter, hit } = setup({ rules: [rule({ match: { path: '/login' } })] });
  assert.equal(hit('203.0.113.9', { uri: '/' }), 'unmatched');
  assert.equal(hit('203.0.113.9'), 'unmatched');
  assert.equal(limiter.tracked(), 0);
  assert.equal(hit('203.0.113.9', { uri: '/login' }), 'counted');
  assert.equal(limiter.tracked(), 1);
});

test('one verdict per hit: when several rules trip, the longest block wins', () => {
  const { verdicts, hits } = setup({
    rules: [
      rule({ name: 'short', limit: 2, blockMs: HOUR }),
      rule({ name: 'long', limit: 2, blockMs: 2 * HOUR }),
      rule({ name: 'later', limit: 3, blockMs: 9 * HOUR }),
    ],
  });
  hits('203.0.113.5', 3);
  assert.equal(verdicts.length, 1);
  assert.equal(nth(verdicts, 0).rule, 'long');
  assert.equal(nth(verdicts, 0).blockMs, 2 * HOUR);
});

test('already-blocked clients are not counted', () => {
  const { limiter, verdicts, blocked, hit, hits } = setup();
  blocked.add('203.0.113.7');
  blocked.add('2001:db8::/64');
  assert.equal(hit('203.0.113.7'), 'blocked-already');
  assert.equal(hit('2001:db8::5'), 'blocked-already');
  hits('203.0.113.7', 100);
  assert.equal(verdicts.length, 0);
  assert.equal(limiter.tracked(), 0);
  blocked.delete('203.0.113.7');
  hits('203.0.113.7', 3);
  assert.equal(verdicts.length, 0, 'counting starts from zero when the block ends');
});

test('maxClients bounds the tracked clients; the least recently seen go first', () => {
  const { limiter, verdicts, hit, hits } = setup({ maxClients: 3 });
  hits('192.0.2.1', 3);
  hits('192.0.2.2', 3);
  hits('192.0.2.3', 3);
  hit('192.0.2.1'); // trips and is reset: 192.0.2.1 leaves the tracked clients
  assert.equal(verdicts.length, 1);
  hits('192.0.2.2', 1); // trips
  assert.equal(verdicts.length, 2);
  hits('192.0.2.4', 3);
  hits('192.0.2.5', 3);
  hits('192.0.2.6', 3);
  assert.equal(limiter.tracked(), 3);
  hits('192.0.2.7', 2);
  assert.equal(limiter.tracked(), 3);
  assert.equal(limiter.stats.evictions, 2, '192.0.2.3 then 192.0.2.4');
  // An evicted client starts over, and a new client reusing its slot starts from zero.
  hits('192.0.2.3', 3);
  hits('192.0.2.8', 3);
  assert.equal(verdicts.length, 2);
  // The most recently seen kept their counts.
  hit('192.0.2.8');
  assert.equal(nth(verdicts, 2).client.text, '192.0.2.8');
});

test('counts survive the counter storage growing', () => {
  const { limiter, verdicts, hits } = setup({ maxClients: 5000 });
  const ips = Array.from({ length: 3000 }, (_, i) => `10.0.${i >> 8}.${i & 255}`);
  for (const ip of ips) hits(ip, 3);
  assert.equal(limiter.tracked(), 3000);
  assert.equal(verdicts.length, 0);
  for (const ip of ips) hits(ip, 1);
  assert.equal(verdicts.length, 3000);
  assert.equal(limiter.tracked(), 0);
});

test('escalation doubles the second block within memory, and forgets after it', () => {
  const { verdicts, clock, hits } = setup();
  hits('203.0.113.7', 4);
  clock.wall += 2 * HOUR;
  hits('203.0.113.7', 4);
  assert.deepEqual(verdicts.map((v) => v.blockMs), [HOUR, 2 * HOUR]);
  assert.deepEqual(nth(verdicts, 1).offence, { count: 2, lastAt: clock.wall });
  clock.wall += 3 * HOUR;
  hits('203.0.113.7', 4);
  assert.equal(nth(verdicts, 2).blockMs, 4 * HOUR);
  clock.wall += 7 * DAY;
  hits('203.0.113.7', 4);
  assert.equal(nth(verdicts, 3).blockMs, HOUR, 'memory expired');
  assert.equal(nth(verdicts, 3).offence.count, 1);
});

test('forget() clears counters and offence history of a client', () => {
  const { limiter, verdicts, hits } = setup();
  hits('203.0.113.7', 4);
  assert.equal(limiter.offenceOf(addr('203.0.113.7'))?.count, 1);
  hits('203.0.113.7', 3);
  limiter.forget(addr('203.0.113.7'));
  assert.equal(limiter.tracked(), 0);
  assert.equal(limiter.offenceOf(addr('203.0.113.7')), undefined);
  hits('203.0.113.7', 3);
  assert.equal(verdicts.length, 1, 'counters were cleared');
  hits('203.0.113.7', 1);
  assert.equal(nth(verdicts, 1).offence.count, 1, 'history was cleared');
  assert.equal(nth(verdicts, 1).blockMs, HOUR);
});

test('forget() of a network clears every client inside it; of an IPv6 address, its client', () => {
  const { limiter, hits } = setup();
  for (const ip of ['203.0.113.1', '203.0.113.200', '198.51.100.1']) hits(ip, 4); // blocked once each
  for (const ip of ['203.0.113.1', '203.0.113.200', '198.51.100.1', '2001:db8:0:1::1', '2001:db8:0:2::1']) hits(ip, 1);
  hits('2001:db8:0:1::1', 3); // trips: an offence for 2001:db8:0:1::/64
  assert.equal(limiter.tracked(), 4);
  limiter.forget(net('203.0.113.0/24'));
  assert.equal(limiter.tracked(), 2);
  assert.deepEqual(limiter.exportOffences().map(([k]) => k), ['198.51.100.1', '2001:db8:0:1::/64']);
  limiter.forget(addr('2001:db8:0:1::ffff'));
  assert.deepEqual(limiter.exportOffences().map(([k]) => k), ['198.51.100.1']);
  limiter.forget(net('2001:db8::/32'));
  assert.equal(limiter.tracked(), 1);
  limiter.forget(net('198.51.100.1/32'));
  assert.equal(limiter.tracked(), 0);
  assert.deepEqual(limiter.exportOffences(), []);
});

test('offence history goes through the journal and keeps escalating after a restart', () => {
  const first = setup();
  first.hits('203.0.113.7', 4);
  first.clock.wall += HOUR;
  first.hits('198.51.100.1', 4);
  const saved = first.limiter.exportOffences();
  assert.deepEqual(saved, [
    ['203.0.113.7', { count: 1, lastAt: first.clock.wall - HOUR }],
    ['198.51.100.1', { count: 1, lastAt: first.clock.wall }],
  ]);

  const second = setup();
  second.clock.wall = first.clock.wall + HOUR;
  second.limiter.importOffences([
    ...saved,
    ['192.0.2.1', { count: 3, lastAt: second.clock.wall - 8 * DAY }], // forgotten by now
    ['192.0.2.2', { count: 0, lastAt: second.clock.wall }], // malformed
  ]);
  assert.deepEqual(second.limiter.exportOffences(), saved);
  second.hits('203.0.113.7', 4);
  assert.equal(nth(second.verdicts, 0).offence.count, 2);
  assert.equal(nth(second.verdicts, 0).blockMs, 2 * HOUR);
});

test('offence history is bounded by maxClients, oldest offence first out', () => {
  const { limiter, clock, hits } = setup({ maxClients: 2 });
  for (const ip of ['192.0.2.1', '192.0.2.2', '192.0.2.3']) {
    hits(ip, 4);
    clock.wall += 1000;
  }
  assert.deepEqual(limiter.exportOffences().map(([k]) => k), ['192.0.2.2', '192.0.2.3']);
});

test('windows run on the hit times, escalation memory on the wall clock', () => {
  const { verdicts, clock, hit } = setup();
  // Wall clock racing ahead does not empty the window...
  for (let i = 0; i < 3; i++) {
    hit('203.0.113.7');
    clock.wall += DAY;
  }
  hit('203.0.113.7');
  assert.equal(verdicts.length, 1);
  // ...and a monotonic clock starting at 0 is fine.
  assert.equal(nth(verdicts, 0).offence.lastAt, clock.wall);
});

test('limiter options are checked', () => {
  assert.throws(() => setup({ maxClients: 0 }), /maxClients must be a positive integer, got 0/);
  assert.throws(() => setup({ ipv6Prefix: 129 }), /ipv6Prefix must be an integer from 0 to 128, got 129/);
  assert.throws(() => setup({ rules: [rule({ name: 'bad', match: { path: '~[' } })] }), /rule "bad": match\.path/);
});
