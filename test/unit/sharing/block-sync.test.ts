import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { parseNetwork } from '../../../src/address.js';
import { Blocker } from '../../../src/enforce/blocker.js';
import { DryRunBackend } from '../../../src/enforce/dry-run.js';
import { AllowList } from '../../../src/limit/allow.js';
import { createLogger } from '../../../src/log.js';
import { Metrics } from '../../../src/metrics.js';
import { BlockSync, SCRIPTS, type BlockLink } from '../../../src/sharing/block-sync.js';
import type { Script } from '../../../src/redis/connection.js';
import { RedisKeys } from '../../../src/redis/keys.js';
import { waitFor } from '../../helpers/wait-for.js';
import { net } from '../../helpers/net.js';

const HOUR = 3_600_000;
const MAX_BLOCK = 30 * 24 * HOUR;


interface Call { script: string; keys: readonly string[]; args: ReadonlyArray<string | number> }

/** What the fake Redis answers: a full read (scan), the changes since a time, and the data's epoch. */
interface FakeRedis {
  entries?: string[];
  lifted?: string[];
  flushed?: number | null;
  /** net, changedAt, json or null, liftedAt or null, … */
  changes?: unknown[];
  epoch?: string;
  /** Which of the checked blocks Redis lacks (1-based); all when not given. */
  lacking?: (nets: string[]) => number[];
}

/** A blocker on the dry-run backend, a fake Redis link and a sync between them, on a fake clock. */
function setup(redis: FakeRedis = {}) {
  const clock = { now: 1_700_000_000_000 };
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger('info', new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  }));
  const allow = new AllowList([net('127.0.0.0/8'), net('::1/128'), net('10.0.0.200')]);
  const blocker = new Blocker({
    backend: new DryRunBackend(), isAllowed: (n) => allow.has(n), log,
    metrics: new Metrics({ activeBlocks: () => 0, trackedClients: () => 0 }), now: () => clock.now,
  });
  const calls: Call[] = [];
  const names = new Map<Script, string>(Object.entries(SCRIPTS).map(([k, v]) => [v, k]));
  const link: BlockLink & { upNow: boolean } = {
    upNow: true,
    get up() {
      return this.upNow;
    },
    async run(s, keys, args) {
      const name = names.get(s) ?? '?';
      calls.push({ script: name, keys, args });
      const epoch = redis.epoch ?? 'e1';
      switch (name) {
        case 'scan': {
          const entries = redis.entries ?? [];
          return ['0', entries, redis.lifted ?? [], clock.now, redis.flushed ?? null, epoch, entries.length / 2];
        }
        case 'changes':
          return [redis.changes ?? [], clock.now, redis.flushed ?? null, epoch];
        case 'lacking': {
          const nets = args.filter((_, i) => i % 2 === 0).map(String);
          return redis.lacking ? redis.lacking(nets) : nets.map((_, i) => i + 1);
        }
        default:
          return 1;
      }
    },
    failed() {},
  };
  const sync = new BlockSync({
    link, keys: new RedisKeys('rated:'), node: 'me', local: blocker,
    parseTarget: (text) => {
      const n = parseNetwork(text.trim());
      return n && n.prefix >= (n.family === 4 ? 8 : 32) ? n : null;
    },
    isAllowed: (n) => allow.has(n), maxBlockMs: MAX_BLOCK, log, now: () => clock.now,
  });
  const message = (o: Record<string, unknown>): string => JSON.stringify({ v: 1, node: 'other', ...o });
  const blockMsg = (ip: string, over: Record<string, unknown> = {}): string =>
    message({ op: 'block', net: ip, expires: clock.now + HOUR, since: clock.now, rule: 'default', reason: '361 requests in 120s', hits: 361, ...over });
  return { clock, lines, blocker, calls, link, sync, message, blockMsg, redis };
}

test('a block published by another node is enforced here as source cluster', () => {
  const { blocker, sync, blockMsg, clock } = setup();
  sync.onMessage(blockMsg('203.0.113.7'));
  const b = blocker.get(net('203.0.113.7'));
  assert.ok(b);
  assert.equal(b.source, 'cluster');
  assert.equal(b.rule, 'default');
  assert.equal(b.reason, '361 requests in 120s');
  assert.equal(b.hits, 361);
  assert.equal(b.expires, clock.now + HOUR);
  assert.equal(sync.stats.adopted, 1);
});

test('our own messages are ignored', () => {
  const { blocker, sync, message, clock } = setup();
  sync.onMessage(message({ node: 'me', op: 'block', net: '203.0.113.7', expires: clock.now + HOUR }));
  assert.equal(blocker.size, 0);
});

test('hostile or mistaken messages never reach the blocker, and are logged at a bounded rate', () => {
  const { blocker, sync, message, blockMsg, lines, clock } = setup();
  const hostile = [
    blockMsg('0.0.0.0/0'), blockMsg('::/0'), blockMsg('127.0.0.1'), blockMsg('::ffff:127.0.0.1'), blockMsg('10.0.0.200'),
    blockMsg('10.0.0.0/24'), blockMsg('010.1.1.1'), blockMsg('2130706433'), blockMsg('192.0.2.1 } ; flush ruleset'),
    blockMsg('1.1.1.1,2.2.2.2'), blockMsg('fe80::1%lo'), blockMsg('localhost'), blockMsg(''),
    blockMsg('203.0.113.9', { expires: 'soon' }), blockMsg('203.0.113.9', { node: '' }), message({ op: 'block', expires: clock.now + HOUR }),
    message({ op: 'explode', net: '203.0.113.9' }), '{"v":1,', 'null', '[]', `${blockMsg('203.0.113.9').slice(0, -1)},"pad":"${'x'.repeat(3000)}"}`,
  ];
  for (const m of hostile) sync.onMessage(m);
  assert.equal(blocker.size, 0, JSON.stringify(blocker.list().map((b) => b.net.text)));
  assert.equal(sync.stats.refused, hostile.length);
  const refusals = lines.filter((l) => l.msg === 'refused a block from Redis');
  assert.ok(refusals.length >= 3 && refusals.length < hostile.length, `${refusals.length} lines for ${hostile.length} refusals`);
  for (const l of refusals) assert.ok(!String(l.ip).includes('\n'));
});

test('fields from Redis are cleaned: unknown rule names, control characters, long reasons, far expiries', () => {
  const { blocker, sync, blockMsg, clock } = setup();
  sync.onMessage(blockMsg('203.0.113.8', { rule: 'a b;c', reason: `evil\u001b[2J${'x'.repeat(500)}`, hits: -3, expires: clock.now + 10 * 365 * 24 * HOUR }));
  const b = blocker.get(net('203.0.113.8'));
  assert.ok(b);
  assert.equal(b.rule, null);
  assert.equal(b.hits, null);
  assert.ok(b.reason !== null && b.reason.length <= 200 && !b.reason.includes('\u001b'));
  assert.equal(b.expires, clock.now + MAX_BLOCK);
});

test('an expired block is not adopted; a shorter copy does not shorten ours', () => {
  const { blocker, sync, blockMsg, clock } = setup();
  sync.onMessage(blockMsg('203.0.113.1', { expires: clock.now - 1 }));
  assert.equal(blocker.size, 0);
  blocker.block({ net: net('203.0.113.2'), durationMs: 2 * HOUR, source: 'rule', rule: 'default' });
  sync.onMessage(blockMsg('203.0.113.2'));
  assert.equal(blocker.get(net('203.0.113.2'))?.source, 'rule');
  assert.equal(blocker.get(net('203.0.113.2'))?.expires, clock.now + 2 * HOUR);
});

test('an unblock lifts blocks decided up to its time, not later ones; a flush lifts every block', async () => {
  const { blocker, sync, message, clock } = setup();
  blocker.block({ net: net('203.0.113.1'), durationMs: HOUR, source: 'rule' });
  const at = clock.now;
  clock.now += 1000;
  blocker.block({ net: net('203.0.113.2'), durationMs: HOUR, source: 'rule' });
  sync.onMessage(message({ op: 'unblock', net: '203.0.113.1', at }));
  sync.onMessage(message({ op: 'unblock', net: '203.0.113.2', at }));
  assert.equal(blocker.has(net('203.0.113.1')), false);
  assert.equal(blocker.has(net('203.0.113.2')), true, 'decided after the unblock');
  sync.onMessage(message({ op: 'flush', at: clock.now }));
  await waitFor(() => blocker.size === 0, { what: 'the flush to lift every block' });
});

test('changes made while Redis is away are shared when it returns, and its state is adopted', async () => {
  // Redis, when it is back, holds a block of another node and a tombstone of a block this node still has.
  const now = 1_700_000_000_000;
  const theirs = JSON.stringify({ node: 'other', net: '198.51.100.5', expires: now + HOUR, since: now - 5000 });
  const { blocker, calls, link, sync } = setup({ entries: ['198.51.100.5', theirs], lifted: ['203.0.113.3', String(now + 1)] });
  blocker.block({ net: net('203.0.113.3'), durationMs: HOUR, source: 'cluster' });
  link.upNow = false;
  blocker.block({ net: net('203.0.113.1'), durationMs: HOUR, source: 'rule', rule: 'default' });
  const ours = blocker.get(net('203.0.113.1'));
  assert.ok(ours);
  sync.published(ours);
  sync.lifted(net('203.0.113.50'));
  assert.equal(calls.length, 0, 'nothing is sent while Redis is away');

  link.upNow = true;
  await sync.resync();
  assert.deepEqual(calls.map((c) => c.script), ['unblock', 'scan', 'lacking', 'block']);
  assert.equal(calls[0]?.args[0], '203.0.113.50', 'the unblock made while away goes first');
  assert.deepEqual(calls[2]?.args, ['203.0.113.1', ours.expires], 'only the block made while away is checked');
  assert.equal(calls[3]?.args[0], '203.0.113.1', 'our block Redis lacks is stored');
  assert.equal(blocker.has(net('203.0.113.3')), false, 'lifted elsewhere meanwhile');
  assert.equal(blocker.get(net('198.51.100.5'))?.source, 'cluster', 'theirs adopted');
});

test('a resync while Redis is away does not stop later ones: blocks made during an outage are stored when it returns', async () => {
  const { blocker, sync, link, calls } = setup();
  link.upNow = false;
  await sync.resync();
  blocker.block({ net: net('198.51.100.40'), durationMs: HOUR, source: 'manual', reason: 'manual' });
  sync.published(blocker.get(net('198.51.100.40'))!);
  await sync.resync();
  assert.equal(calls.length, 0, 'nothing is sent while Redis is away');
  link.upNow = true;
  await sync.resync();
  assert.equal(sync.stats.syncs, 1, 'the resync after the outage ran');
  assert.ok(calls.some((c) => c.script === 'scan'), 'it read the shared blocks');
  assert.ok(calls.some((c) => c.script === 'block' && [...c.args, ...c.keys].some((a) => String(a).includes('198.51.100.40'))),
    `the block made during the outage is stored: ${JSON.stringify(calls.map((c) => c.script))}`);
  await sync.resync();
  assert.equal(sync.stats.syncs, 2, 'and so does every later one');
});

test('after an outage: an older copy of a block lifted here stays lifted, and blocks adopted from others are not stored again from here', async () => {
  const { blocker, sync, link, calls, blockMsg, clock } = setup();
  sync.onMessage(blockMsg('203.0.113.62'));
  assert.ok(blocker.get(net('203.0.113.62')));
  link.upNow = false;
  clock.now += 5000;
  blocker.unblock(net('203.0.113.62'));
  sync.lifted(net('203.0.113.62'));
  // Another node, back first, publishes its copy again before this node could replay the lift.
  clock.now += 5000;
  sync.onMessage(blockMsg('203.0.113.62', { since: clock.now - 10_000 }));
  assert.equal(blocker.get(net('203.0.113.62')), undefined, 'the copy older than the lift is not adopted');
  sync.onMessage(blockMsg('203.0.113.70'));
  link.upNow = true;
  await sync.resync();
  const stored = calls.filter((c) => c.script === 'block').map((c) => c.args[0]);
  assert.deepEqual(stored, [], 'a cluster block is its own node\'s to store');
  assert.deepEqual(calls.filter((c) => c.script === 'unblock').map((c) => c.args[0]), ['203.0.113.62']);
});

test('after the first sync only changes are read: a sync costs the same with 50,000 blocks as with none', async () => {
  const { blocker, sync, calls, clock, redis } = setup();
  for (let i = 0; i < 50_000; i++) blocker.block({ net: net(`10.2.${i >> 8}.${i & 255}`), durationMs: HOUR, source: 'rule' });
  await sync.resync();
  assert.deepEqual(calls.map((c) => c.script), ['scan'], 'the first sync reads everything once');
  const firstAt = clock.now;
  clock.now += 30_000;
  calls.length = 0;
  // Meanwhile another node lifted one of ours and stored a block of its own.
  const theirs = JSON.stringify({ node: 'other', net: '198.51.100.9', expires: clock.now + HOUR, since: clock.now - 100 });
  redis.changes = ['10.2.0.7', firstAt + 10_000, null, clock.now, '198.51.100.9', firstAt + 20_000, theirs, null];
  await sync.resync();
  assert.deepEqual(calls.map((c) => c.script), ['changes'], 'one call, no walk of the blocks, nothing stored');
  assert.equal(calls[0]?.args[2], firstAt - 5000, 'from where the last read began, with a margin for a promoted replica');
  assert.equal(blocker.has(net('10.2.0.7')), false, 'the lift is applied');
  assert.equal(blocker.get(net('198.51.100.9'))?.source, 'cluster', 'their block is adopted');
  assert.equal(blocker.size, 50_000);
});

test('blocks restored at start are checked against Redis a page at a time; only those it lacks are stored', async () => {
  const { blocker, sync, calls, redis } = setup();
  await sync.resync();
  for (let i = 0; i < 4500; i++) blocker.block({ net: net(`10.3.${i >> 8}.${i & 255}`), durationMs: HOUR, source: i % 2 ? 'rule' : 'cluster' });
  redis.lacking = (nets) => nets.flatMap((n, i) => (n.endsWith('.1') ? [i + 1] : []));
  calls.length = 0;
  sync.recheck(blocker.list());
  await sync.resync();
  const checks = calls.filter((c) => c.script === 'lacking');
  assert.equal(checks.length, 2, '2,250 blocks of ours in pages of 2,000');
  assert.equal(checks.reduce((n, c) => n + c.args.length / 2, 0), 2250, 'adopted blocks are not this node\'s to store');
  const stored = calls.filter((c) => c.script === 'block').map((c) => String(c.args[0]));
  assert.ok(stored.length > 0 && stored.every((ip) => ip.endsWith('.1')), `only what Redis lacks: ${stored.length}`);
});

test('Redis data lost (another epoch): everything is read again and every block of ours checked and stored again', async () => {
  const { blocker, sync, calls, redis } = setup();
  blocker.block({ net: net('203.0.113.21'), durationMs: HOUR, source: 'manual' });
  blocker.block({ net: net('203.0.113.22'), durationMs: HOUR, source: 'cluster' });
  await sync.resync();
  calls.length = 0;
  redis.epoch = 'e2';
  await sync.resync();
  assert.deepEqual(calls.map((c) => c.script), ['changes', 'scan', 'lacking', 'block']);
  assert.equal(calls[3]?.args[0], '203.0.113.21');
});
