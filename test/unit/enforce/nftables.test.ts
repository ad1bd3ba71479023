import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Network } from '../../../src/address.js';
import { applyBisecting, OpQueue, type Op } from '../../../src/enforce/backend.js';
import { ipv6Mask, NftablesBackend, parseSetListing, renderOps, renderStructure, setOf, type NftOptions } from '../../../src/enforce/nftables.js';
import type { Runner } from '../../../src/run-command.js';
import { net } from '../../helpers/net.js';

const OPTS: NftOptions = { table: 'rated', hook: 'input', priority: -10, ipv6Prefix: 64, maxBlocks: 1_048_576 };


function add(text: string, timeoutMs: number, replace = false): Op {
  return { kind: 'add', net: net(text), timeoutMs, replace };
}

function del(text: string): Op {
  return { kind: 'delete', net: net(text), timeoutMs: 0, replace: false };
}

const T = { family: 'inet', table: 'rated' };
const inSet = (name: string) => (elem: unknown[]) => ({ element: { ...T, name, elem } });
const v4 = inSet('v4');
const v6 = inSet('v6');
const v4net = inSet('v4net');
const v6net = inSet('v6net');

const SADDR4 = { payload: { protocol: 'ip', field: 'saddr' } };
const SADDR6 = { payload: { protocol: 'ip6', field: 'saddr' } };
const rule = (left: unknown, set: string) => ({ add: { rule: { ...T, chain: 'block', expr: [
  { match: { op: '==', left, right: `@${set}` } },
  { counter: null },
  { drop: null },
] } } });
const RULES = [
  rule(SADDR4, 'v4'),
  rule(SADDR4, 'v4net'),
  // IPv6 clients are their /64: the address is masked, then looked up in a hash set.
  rule({ '&': [SADDR6, 'ffff:ffff:ffff:ffff::'] }, 'v6'),
  rule(SADDR6, 'v6net'),
];
// The hash sets are walked for expired elements every 30 s, not every second (a walk of 1,000,000 holds a CPU 70–80 ms).
const set = (name: string, type: string, interval: boolean) => ({ add: { set: {
  ...T, name, type, flags: interval ? ['interval', 'timeout'] : ['timeout'], size: 1_048_576, stmt: [{ counter: null }],
  ...(interval ? {} : { 'gc-interval': 30 }),
} } });
const SETS = [
  set('v4', 'ipv4_addr', false), set('v6', 'ipv6_addr', false), set('v4net', 'ipv4_addr', true), set('v6net', 'ipv6_addr', true),
];

test('renderStructure: hash sets v4 and v6 for clients, small interval sets for other networks, counters, a size, one chain', () => {
  assert.deepEqual(renderStructure(OPTS, false), {
    nftables: [
      { add: { table: { family: 'inet', name: 'rated' } } },
      ...SETS,
      { add: { chain: { ...T, name: 'block', type: 'filter', hook: 'input', prio: -10, policy: 'accept' } } },
      { flush: { chain: { ...T, name: 'block' } } },
      ...RULES,
    ],
  });
});

test('renderStructure: a chain with the wrong hook is deleted and created again; the sets are kept', () => {
  const doc = renderStructure({ ...OPTS, table: 'other', hook: 'prerouting', priority: -300 }, true) as { nftables: object[] };
  const chain = { family: 'inet', table: 'other', name: 'block' };
  assert.deepEqual(doc.nftables.slice(5, 10), [
    { add: { chain } },
    { flush: { chain } },
    { delete: { chain } },
    { add: { chain: { ...chain, type: 'filter', hook: 'prerouting', prio: -300, policy: 'accept' } } },
    { flush: { chain } },
  ]);
  assert.equal(doc.nftables.filter((c) => 'delete' in c).length, 1, 'only the chain is deleted, never a set or the table');
});

test('renderStructure: the older layout moves in one transaction: chain out, old sets out, new sets in with every element, chain and rules in', () => {
  const doc = renderStructure(OPTS, false, [
    { net: net('192.0.2.1'), timeoutMs: 60_000 },
    { net: net('2001:db8:1::/64'), timeoutMs: 120_000 },
    { net: net('198.51.100.0/24'), timeoutMs: 30_000 },
  ]);
  const chain = { ...T, name: 'block' };
  assert.deepEqual(doc.nftables, [
    { add: { table: { family: 'inet', name: 'rated' } } },
    { add: { chain } },
    { flush: { chain } },
    { delete: { chain } },
    { delete: { set: { ...T, name: 'v4' } } },
    { delete: { set: { ...T, name: 'v6' } } },
    ...SETS,
    { add: v4([{ elem: { val: '192.0.2.1', timeout: 60 } }]) },
    { add: v6([{ elem: { val: '2001:db8:1::', timeout: 120 } }]) },
    { add: v4net([{ elem: { val: { prefix: { addr: '198.51.100.0', len: 24 } }, timeout: 30 } }]) },
    { add: { chain: { ...chain, type: 'filter', hook: 'input', prio: -10, policy: 'accept' } } },
    { flush: { chain } },
    ...RULES,
  ]);
});

test('ipv6Mask: the mask of a prefix length as nft writes it', () => {
  assert.equal(ipv6Mask(64), 'ffff:ffff:ffff:ffff::');
  assert.equal(ipv6Mask(48), 'ffff:ffff:ffff::');
  assert.equal(ipv6Mask(56), 'ffff:ffff:ffff:ff00::');
  assert.equal(ipv6Mask(128), 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff');
});

test('setOf: addresses and client networks to the hash sets, every other network to the interval sets', () => {
  assert.deepEqual(['192.0.2.1', '192.0.2.0/24', '2001:db8::/64', '2001:db8::1', '2001:db8::/48', '64:ff9b::c000:201'].map((t) => setOf(OPTS, net(t))),
    ['v4', 'v4net', 'v6', 'v6net', 'v6net', 'v6net']);
});

test('renderOps: a new block is one add with its timeout', () => {
  assert.deepEqual(renderOps(OPTS, [add('198.51.100.7', 600_000)]), {
    nftables: [{ add: v4([{ elem: { val: '198.51.100.7', timeout: 600 } }]) }],
  });
});

test('renderOps: a renewal in a hash set is add, delete, add in the same transaction: the delete never meets a missing element', () => {
  assert.deepEqual(renderOps(OPTS, [add('198.51.100.7', 900_000, true)]), {
    nftables: [
      { add: v4([{ elem: { val: '198.51.100.7', timeout: 1 } }]) },
      { delete: v4(['198.51.100.7']) },
      { add: v4([{ elem: { val: '198.51.100.7', timeout: 900 } }]) },
    ],
  });
});

test('renderOps: a delete is one delete, with no placeholder add that could collide with an overlapping add', () => {
  assert.deepEqual(renderOps(OPTS, [del('198.51.100.7'), add('198.51.100.0/24', 60_000)]), {
    nftables: [
      { delete: v4(['198.51.100.7']) },
      { add: v4net([{ elem: { val: { prefix: { addr: '198.51.100.0', len: 24 } }, timeout: 60 } }]) },
    ],
  });
});

test('renderOps: an IPv6 /64 client goes to v6 as its network address, a single IPv6 address to v6net', () => {
  assert.deepEqual(renderOps(OPTS, [add('2001:db8:1:2::/64', 3_600_000), del('2001:db8::1')]), {
    nftables: [
      { delete: v6net(['2001:db8::1']) },
      { add: v6([{ elem: { val: '2001:db8:1:2::', timeout: 3600 } }]) },
    ],
  });
});

test('renderOps: one delete and one add per set, deletes first (after the renewals\' adds), whatever the order of the queue', () => {
  const doc = renderOps(OPTS, [
    add('192.0.2.1', 60_000), add('2001:db8::/64', 60_000), del('192.0.2.9'), add('192.0.2.2', 120_000, true), del('2001:db8:9::/64'),
  ]);
  assert.deepEqual(doc, {
    nftables: [
      { add: v4([{ elem: { val: '192.0.2.2', timeout: 1 } }]) },
      { delete: v4(['192.0.2.9', '192.0.2.2']) },
      { delete: v6(['2001:db8:9::']) },
      { add: v4([{ elem: { val: '192.0.2.1', timeout: 60 } }, { elem: { val: '192.0.2.2', timeout: 120 } }]) },
      { add: v6([{ elem: { val: '2001:db8::', timeout: 60 } }]) },
    ],
  });
});

test('renderOps: timeouts are rounded up to whole seconds and never below 1', () => {
  const timeouts = [1, 999, 1000, 1001, 1500, 0, 59_999].map((ms) => {
    const doc = renderOps(OPTS, [add('192.0.2.1', ms)]) as { nftables: Array<{ add: { element: { elem: Array<{ elem: { timeout: number } }> } } }> };
    return doc.nftables[0]?.add.element.elem[0]?.elem.timeout;
  });
  assert.deepEqual(timeouts, [1, 1, 1, 2, 2, 1, 60]);
});

test('renderOps: the address text is a JSON value, never spliced into command text', () => {
  const hostile: Network = { family: 4, value: 0n, prefix: 32, text: '1.2.3.4 } ; flush ruleset' };
  const json = JSON.stringify(renderOps(OPTS, [{ kind: 'add', net: hostile, timeoutMs: 1000, replace: false }]));
  assert.deepEqual(JSON.parse(json), { nftables: [{ add: v4([{ elem: { val: '1.2.3.4 } ; flush ruleset', timeout: 1 } }]) }] });
});

// What `nft -j list set inet rated v4` prints (nft 1.0.6), plus one element
// without a timeout and one value nft could print but we do not manage.
const LISTING = JSON.stringify({
  nftables: [
    { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
    { set: {
      family: 'inet', name: 'v4', table: 'rated', type: 'ipv4_addr', handle: 1, flags: ['interval', 'timeout'],
      elem: [
        { elem: { val: '198.51.100.7', timeout: 900, expires: 899 } },
        { elem: { val: { prefix: { addr: '203.0.113.0', len: 24 } }, timeout: 60, expires: 12 } },
        '192.0.2.9',
        { elem: { val: { range: ['192.0.2.20', '192.0.2.30'] }, timeout: 5, expires: 4 } },
        { elem: { val: 'not-an-address', timeout: 5, expires: 4 } },
      ],
    } },
  ],
});

test('parseSetListing: string and prefix values, expires → expiresAt, unknown values skipped', () => {
  const now = 1_700_000_000_000;
  const entries = parseSetListing(LISTING, now).map((e) => ({ text: e.net.text, prefix: e.net.prefix, expiresAt: e.expiresAt }));
  assert.deepEqual(entries, [
    { text: '198.51.100.7', prefix: 32, expiresAt: now + 899_000 },
    { text: '203.0.113.0/24', prefix: 24, expiresAt: now + 12_000 },
    { text: '192.0.2.9', prefix: 32, expiresAt: null },
  ]);
});

test('parseSetListing: an IPv6 prefix element and an empty set', () => {
  const v6Listing = JSON.stringify({ nftables: [
    { metainfo: { version: '1.0.6' } },
    { set: { family: 'inet', name: 'v6', table: 'rated', type: 'ipv6_addr', elem: [
      { elem: { val: { prefix: { addr: '2001:db8:1:2::', len: 64 } }, timeout: 5, expires: 4 } },
    ] } },
  ] });
  const [entry, ...rest] = parseSetListing(v6Listing, 0);
  assert.equal(rest.length, 0);
  assert.equal(entry?.net.text, '2001:db8:1:2::/64');
  assert.equal(entry?.net.family, 6);
  assert.equal(entry?.expiresAt, 4000);
  const empty = JSON.stringify({ nftables: [{ metainfo: {} }, { set: { family: 'inet', name: 'v4', table: 'rated', type: 'ipv4_addr' } }] });
  assert.deepEqual(parseSetListing(empty, 0), []);
});

test('parseSetListing: a v6 hash-set element is its client network; per-element counters are read', () => {
  const listing = JSON.stringify({ nftables: [
    { metainfo: { version: '1.0.6' } },
    { set: { family: 'inet', name: 'v6', table: 'rated', type: 'ipv6_addr', flags: ['timeout'], elem: [
      { elem: { val: '2001:db8:1:2::', timeout: 5, expires: 4, counter: { packets: 3, bytes: 180 } } },
    ] } },
  ] });
  const [entry] = parseSetListing(listing, 0, 64);
  assert.equal(entry?.net.text, '2001:db8:1:2::/64');
  assert.deepEqual(entry?.dropped, { packets: 3, bytes: 180 });
});

test('OpQueue: the last change to an element wins', () => {
  const q = new OpQueue();
  q.add(net('192.0.2.1'), 1000, false);
  q.add(net('192.0.2.1'), 5000, false);
  q.add(net('192.0.2.2'), 1000, false);
  q.delete(net('192.0.2.2'));
  q.delete(net('192.0.2.3'));
  q.add(net('192.0.2.3'), 7000, false);
  q.add(net('192.0.2.4'), 1000, true);
  q.add(net('192.0.2.4'), 2000, false);
  assert.equal(q.size, 4);
  const ops = q.drain().map((o) => [o.net.text, o.kind, o.timeoutMs, o.replace]);
  assert.deepEqual(ops, [
    ['192.0.2.1', 'add', 5000, false],
    ['192.0.2.2', 'delete', 0, false],
    // An add after a queued delete may find the element still present.
    ['192.0.2.3', 'add', 7000, true],
    // A queued renewal stays a renewal.
    ['192.0.2.4', 'add', 2000, true],
  ]);
  assert.equal(q.size, 0);
  assert.deepEqual(q.drain(), []);
});

test('applyBisecting: one poison op among 8 is isolated; the 7 others are applied exactly once', async () => {
  const ops = Array.from({ length: 8 }, (_, i) => add(`192.0.2.${i + 1}`, 1000));
  const poison = ops[5] as Op;
  const applied: string[] = [];
  let calls = 0;
  const result = await applyBisecting(ops, async (batch) => {
    calls++;
    if (batch.includes(poison)) return 'Error: Could not resolve hostname';
    applied.push(...batch.map((o) => o.net.text));
    return null;
  });
  assert.equal(result.applied, 7);
  assert.deepEqual(result.failed, [{ net: poison.net, op: 'add', error: 'Error: Could not resolve hostname' }]);
  assert.deepEqual(applied.sort(), ops.filter((o) => o !== poison).map((o) => o.net.text).sort());
  // 8 → 4+4 → 2+2 → 1+1: 7 transactions, not 8 single ones after a first failure.
  assert.equal(calls, 7);
});

test('applyBisecting: a good batch is one call; an empty one none', async () => {
  let calls = 0;
  const apply = async (): Promise<null> => {
    calls++;
    return null;
  };
  assert.deepEqual(await applyBisecting([add('192.0.2.1', 1), del('192.0.2.2')], apply), { applied: 2, failed: [] });
  assert.deepEqual(await applyBisecting([], apply), { applied: 0, failed: [] });
  assert.equal(calls, 1);
});

/** A runner that refuses deletes of `absent` the way nft 1.0.6 does for interval sets. */
function fakeNft(absent: Set<string>, seen: unknown[][]): Runner {
  return async (_file, _args, input) => {
    const commands = (JSON.parse(input ?? '{}') as { nftables: Array<Record<string, { element: { elem: unknown[] } }>> }).nftables;
    seen.push(commands);
    for (const c of commands) {
      const value = c.delete?.element.elem[0];
      if (typeof value === 'string' && absent.has(value)) return { exitCode: 1, stdout: '', stderr: 'internal:0:0-0: Error: element does not exist\n\n' };
    }
    return { exitCode: 0, stdout: '', stderr: '' };
  };
}

test('commit: deleting an element that is already gone succeeds, and the rest of the batch is applied', async () => {
  const seen: unknown[][] = [];
  const backend = new NftablesBackend(fakeNft(new Set(['192.0.2.9']), seen), OPTS);
  backend.add(net('192.0.2.1'), 1000, false);
  backend.delete(net('192.0.2.9'));
  backend.add(net('192.0.2.2'), 1000, false);
  const result = await backend.commit();
  assert.deepEqual(result, { applied: 3, failed: [] });
  assert.equal(backend.pending(), 0);
});

test('commit: renewing an element that is already gone adds it', async () => {
  const seen: unknown[][] = [];
  const backend = new NftablesBackend(fakeNft(new Set(['192.0.2.9']), seen), OPTS);
  backend.add(net('192.0.2.9'), 30_000, true);
  const result = await backend.commit();
  assert.deepEqual(result, { applied: 1, failed: [] });
  assert.deepEqual(seen.at(-1), [{ add: v4([{ elem: { val: '192.0.2.9', timeout: 30 } }]) }]);
});

test('commit: other errors are reported, not retried as adds', async () => {
  const runner: Runner = async () => ({ exitCode: 1, stdout: '', stderr: 'Error: Could not resolve hostname: Name or service not known\n' });
  const backend = new NftablesBackend(runner, OPTS);
  backend.delete(net('192.0.2.9'));
  const result = await backend.commit();
  assert.equal(result.applied, 0);
  assert.deepEqual(result.failed.map((f) => [f.net.text, f.op, f.error]), [['192.0.2.9', 'delete', 'Error: Could not resolve hostname: Name or service not known']]);
});
