import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { performance } from 'node:perf_hooks';
import type { Network } from '../../../src/address.js';
import { QueuedBackend, type Backend, type CommitResult, type KernelEntry, type Op } from '../../../src/enforce/backend.js';
import { Blocker } from '../../../src/enforce/blocker.js';
import { createLogger } from '../../../src/log.js';
import { Metrics } from '../../../src/metrics.js';
import { net } from '../../helpers/net.js';
import { waitFor } from '../../helpers/wait-for.js';

/** A backend that keeps its "kernel" in a map and refuses overlapping elements, like an nft interval set. */
class IntervalSetBackend extends QueuedBackend implements Backend {
  readonly kind = 'dry-run' as const;
  constructor(readonly expiresInKernel = true, readonly maxTimeoutMs?: number) {
    super();
  }
  readonly kernel = new Map<string, { net: Network; timeoutMs: number }>();
  readonly commits: Op[][] = [];
  readLimit = Number.POSITIVE_INFINITY;
  advisedMax: number | undefined = undefined;
  lists = 0;
  async probe(): Promise<void> {}
  async ensure(): Promise<void> {}
  async check() {
    return { intact: true, droppedPackets: null };
  }
  protected async apply(ops: Op[]): Promise<CommitResult> {
    this.commits.push(ops);
    const failed: Array<{ net: Network; op: 'add' | 'delete'; error: string }> = [];
    for (const op of ops) {
      if (op.kind === 'delete') {
        this.kernel.delete(op.net.text);
        continue;
      }
      const overlap = [...this.kernel.values()].find((e) => e.net.text !== op.net.text && overlaps(e.net, op.net));
      if (overlap) failed.push({ net: op.net, op: 'add', error: `interval overlaps with ${overlap.net.text}` });
      else this.kernel.set(op.net.text, { net: op.net, timeoutMs: op.timeoutMs });
    }
    return { applied: ops.length - failed.length, failed };
  }
  async list(): Promise<KernelEntry[]> {
    this.lists++;
    return [...this.kernel.values()].map((e) => ({ net: e.net, expiresAt: null }));
  }
  flushFails = false;
  async flush(): Promise<number | null> {
    if (this.flushFails) throw new Error('nft did not finish within 10000 ms and was killed');
    const n = this.kernel.size;
    this.kernel.clear();
    return n;
  }
}

function overlaps(a: Network, b: Network): boolean {
  if (a.family !== b.family) return false;
  const bits = a.family === 4 ? 32 : 128;
  const p = Math.min(a.prefix, b.prefix);
  const shift = BigInt(bits - p);
  return (a.value >> shift) === (b.value >> shift);
}


function setup(allowed: string[] = ['127.0.0.0/8']) {
  let now = 1_000_000;
  const backend = new IntervalSetBackend();
  const allow = allowed.map(net);
  const blocker = new Blocker({
    backend,
    isAllowed: (n) => allow.some((a) => overlaps(a, n)),
    log: createLogger('silent'),
    metrics: new Metrics({ activeBlocks: () => 0, trackedClients: () => 0 }),
    now: () => now,
  });
  return { backend, blocker, advance: (ms: number) => (now += ms), now: () => now };
}

test('a change after a quiet spell is committed at once; changes right after a commit gather for the batch delay', async () => {
  const backend = new IntervalSetBackend();
  const blocker = new Blocker({
    backend, isAllowed: () => false, log: createLogger('silent'), metrics: new Metrics({ activeBlocks: () => 0, trackedClients: () => 0 }),
    batchDelayMs: 2000,
  });
  try {
    const t0 = performance.now();
    blocker.block({ net: net('192.0.2.1'), durationMs: 60_000, source: 'manual' });
    blocker.block({ net: net('192.0.2.2'), durationMs: 60_000, source: 'manual' });
    await waitFor(() => backend.commits.length === 1, { timeoutMs: 1500, what: 'the first commit, well before the 2 s batch delay' });
    assert.deepEqual(backend.commits[0]?.map((o) => o.net.text), ['192.0.2.1', '192.0.2.2'], 'one event-loop turn, one batch');
    blocker.block({ net: net('192.0.2.3'), durationMs: 60_000, source: 'manual' });
    blocker.block({ net: net('192.0.2.4'), durationMs: 60_000, source: 'manual' });
    const second = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(backend.commits.length, 1, 'right after a commit: a storm, whose changes gather');
    await waitFor(() => backend.commits.length === 2, { timeoutMs: 5000, what: 'the second commit, after the batch delay' });
    assert.deepEqual(backend.commits[1]?.map((o) => o.net.text), ['192.0.2.3', '192.0.2.4']);
    assert.ok(performance.now() - second >= 1900, 'it waited for the batch delay');
    assert.ok(second - t0 < 1500);
  } finally {
    await blocker.close();
  }
});

test('a block reaches the kernel in one batch with its timeout', async () => {
  const { backend, blocker } = setup();
  for (let i = 1; i <= 50; i++) blocker.block({ net: net(`192.0.2.${i}`), durationMs: 60_000, source: 'rule', rule: 'default' });
  await blocker.settle();
  assert.equal(backend.commits.length, 1, 'decisions close together share one transaction');
  assert.equal(backend.kernel.size, 50);
  assert.equal(backend.kernel.get('192.0.2.7')?.timeoutMs, 60_000);
});

test('allow-listed addresses and networks that overlap the allow list are refused', () => {
  const { backend, blocker } = setup(['127.0.0.0/8', '198.51.100.7']);
  assert.throws(() => blocker.block({ net: net('127.0.0.1'), durationMs: 1000, source: 'manual' }), /allow-listed/);
  assert.throws(() => blocker.block({ net: net('198.51.100.0/24'), durationMs: 1000, source: 'manual' }), /allow-listed/);
  assert.equal(blocker.size, 0);
  assert.equal(backend.pending(), 0);
});

test('a longer block extends (renewing the kernel timeout); a shorter one never shortens', async () => {
  const { backend, blocker, advance } = setup();
  const ip = net('192.0.2.1');
  assert.equal(blocker.block({ net: ip, durationMs: 60_000, source: 'rule' }), 'added');
  await blocker.settle();
  advance(10_000);
  assert.equal(blocker.block({ net: ip, durationMs: 10_000, source: 'manual' }), 'unchanged');
  assert.equal(blocker.block({ net: ip, durationMs: 3_600_000, source: 'manual' }), 'extended');
  await blocker.settle();
  const last = backend.commits.at(-1);
  assert.deepEqual(last?.map((o) => [o.kind, o.net.text, o.timeoutMs, o.replace]), [['add', '192.0.2.1', 3_600_000, true]]);
  assert.equal(blocker.get(ip)?.source, 'manual');
});

test('nested blocks: only the outermost is a kernel element; inner ones return when it is lifted', async () => {
  const { backend, blocker } = setup();
  blocker.block({ net: net('203.0.113.7'), durationMs: 3_600_000, source: 'rule' });
  await blocker.settle();
  blocker.block({ net: net('203.0.113.0/24'), durationMs: 60_000, source: 'manual' });
  await blocker.settle();
  assert.deepEqual([...backend.kernel.keys()], ['203.0.113.0/24']);
  blocker.block({ net: net('203.0.113.9'), durationMs: 60_000, source: 'rule' });
  await blocker.settle();
  assert.deepEqual([...backend.kernel.keys()], ['203.0.113.0/24'], 'an address inside a blocked network stays out of the kernel');
  assert.equal(blocker.size, 3);
  blocker.unblock(net('203.0.113.0/24'));
  await blocker.settle();
  assert.deepEqual([...backend.kernel.keys()].sort(), ['203.0.113.7', '203.0.113.9']);
});

test('expiry lifts blocks whose time is up and leaves the others', async () => {
  const { blocker, advance } = setup();
  blocker.block({ net: net('192.0.2.1'), durationMs: 1000, source: 'rule' });
  blocker.block({ net: net('192.0.2.2'), durationMs: 5000, source: 'rule' });
  advance(1000);
  blocker.sweep();
  assert.equal(blocker.has(net('192.0.2.1')), false);
  assert.equal(blocker.has(net('192.0.2.2')), true);
});

test('flush lifts everything and empties the sets', async () => {
  const { backend, blocker } = setup();
  blocker.block({ net: net('192.0.2.1'), durationMs: 1000, source: 'rule' });
  blocker.block({ net: net('2001:db8::/64'), durationMs: 1000, source: 'rule' });
  await blocker.settle();
  assert.equal(await blocker.flush(), 2);
  assert.equal(blocker.size, 0);
  assert.equal(backend.kernel.size, 0);
});

test('a flush the kernel fails forgets nothing: every block stays listed and in force', async () => {
  const { backend, blocker } = setup();
  blocker.block({ net: net('192.0.2.1'), durationMs: 60_000, source: 'rule' });
  blocker.block({ net: net('192.0.2.2'), durationMs: 60_000, source: 'manual' });
  await blocker.settle();
  backend.flushFails = true;
  await assert.rejects(blocker.flush(), /killed/);
  assert.equal(blocker.size, 2, 'both blocks are still listed');
  assert.equal(backend.kernel.size, 2, 'and still in the kernel');
  backend.flushFails = false;
  assert.equal(await blocker.flush(), 2);
  assert.equal(blocker.size, 0);
});

test('resync adopts unknown kernel elements as reconciled and restores missing ones', async () => {
  const { backend, blocker } = setup();
  backend.kernel.set('198.51.100.9', { net: net('198.51.100.9'), timeoutMs: 1000 });
  blocker.adopt({ net: net('192.0.2.5'), rule: 'default', reason: 'x', source: 'rule', since: 1, expires: 2_000_000, hits: 9 });
  const r = await blocker.resync(true);
  assert.deepEqual(r, { added: 1, adopted: 1, removed: 0 });
  assert.equal(blocker.get(net('198.51.100.9'))?.source, 'reconciled');
  assert.ok(backend.kernel.has('192.0.2.5'));
});

test('a refused element does not cost the others their place, and marks a repair as due', async () => {
  const { backend, blocker } = setup();
  backend.kernel.set('10.0.0.0/8', { net: net('10.0.0.0/8'), timeoutMs: 1000 });
  blocker.block({ net: net('10.1.2.3'), durationMs: 1000, source: 'rule' });
  blocker.block({ net: net('192.0.2.1'), durationMs: 1000, source: 'rule' });
  await blocker.settle();
  assert.ok(backend.kernel.has('192.0.2.1'));
  assert.equal(blocker.needsRepair, true);
  assert.equal(blocker.lastErrors.length, 1);
});

/** A backend like iptables: no kernel expiry, optionally a longest kernel timeout like ipset. */
class RuleBackend extends IntervalSetBackend {
  readonly kernelExpiry = new Map<string, number>();
  override async list(): Promise<KernelEntry[]> {
    return [...this.kernel.values()].map((e) => ({ net: e.net, expiresAt: this.kernelExpiry.get(e.net.text) ?? null }));
  }
}

function setupRules(backend: RuleBackend, reconciledBlockMs?: number) {
  let now = 1_000_000;
  const blocker = new Blocker({
    backend,
    isAllowed: () => false,
    log: createLogger('silent'),
    metrics: new Metrics({ activeBlocks: () => 0, trackedClients: () => 0 }),
    now: () => now,
    ...(reconciledBlockMs === undefined ? {} : { reconciledBlockMs }),
  });
  return { blocker, advance: (ms: number) => (now += ms), now: () => now };
}

test('without kernel expiry, the sweep deletes the rule of an expired block', async () => {
  const backend = new RuleBackend(false);
  const { blocker, advance } = setupRules(backend);
  blocker.block({ net: net('192.0.2.1'), durationMs: 1000, source: 'rule' });
  blocker.block({ net: net('192.0.2.2'), durationMs: 5000, source: 'rule' });
  await blocker.settle();
  advance(1000);
  blocker.sweep();
  await blocker.settle();
  assert.deepEqual([...backend.kernel.keys()], ['192.0.2.2']);
});

test('without kernel expiry, an adopted kernel entry gets the configured block time instead of none', async () => {
  const backend = new RuleBackend(false);
  backend.kernel.set('198.51.100.9', { net: net('198.51.100.9'), timeoutMs: 0 });
  const { blocker, now, advance } = setupRules(backend, 60_000);
  assert.deepEqual(await blocker.resync(true), { added: 0, adopted: 1, removed: 0 });
  const adopted = blocker.get(net('198.51.100.9'));
  assert.equal(adopted?.source, 'reconciled');
  assert.equal(adopted?.expires, now() + 60_000);
  advance(60_000);
  blocker.sweep();
  await blocker.settle();
  assert.equal(backend.kernel.size, 0, 'the rule is lifted when that time is up');
});

test('with kernel expiry, an element without a timeout is adopted as it is', async () => {
  const backend = new RuleBackend(true);
  backend.kernel.set('198.51.100.9', { net: net('198.51.100.9'), timeoutMs: 0 });
  const { blocker } = setupRules(backend, 60_000);
  await blocker.resync(true);
  assert.equal(blocker.get(net('198.51.100.9'))?.expires, null);
});

test('a block longer than the kernel\'s longest timeout is renewed only when half of that is gone', async () => {
  const day = 86_400_000;
  const backend = new RuleBackend(true, 10 * day);
  const { blocker, now, advance } = setupRules(backend);
  blocker.block({ net: net('192.0.2.1'), durationMs: 30 * day, source: 'manual' });
  await blocker.settle();
  backend.kernelExpiry.set('192.0.2.1', now() + 10 * day);
  assert.equal((await blocker.resync(true)).added, 0, 'no renewal right after the add');
  advance(4 * day);
  assert.equal((await blocker.resync(true)).added, 0, 'none while more than half the kernel time is left');
  advance(2 * day);
  assert.equal((await blocker.resync(true)).added, 1, 'renewed once less than half is left');
});

/**
 * A backend whose list() takes its snapshot at once, like `nft list set`, and
 * answers only when told: what the blocker does meanwhile races the resync.
 */
class HeldListBackend extends RuleBackend {
  private held: { started: () => void; release: Promise<void> } | null = null;
  private active = 0;
  maxConcurrentLists = 0;
  readonly refuse = new Set<string>();

  /** Holds the next list(); `started` resolves once it has read the kernel, `open` lets it answer. */
  hold(): { started: Promise<void>; open: () => void } {
    let open!: () => void;
    let started!: () => void;
    const release = new Promise<void>((r) => (open = r));
    const begun = new Promise<void>((r) => (started = r));
    this.held = { started, release };
    return { started: begun, open };
  }

  override async list(): Promise<KernelEntry[]> {
    this.active++;
    this.maxConcurrentLists = Math.max(this.maxConcurrentLists, this.active);
    try {
      const snapshot = await super.list();
      const held = this.held;
      this.held = null;
      if (held) {
        held.started();
        await held.release;
      }
      return snapshot;
    } finally {
      this.active--;
    }
  }

  override async commit(): Promise<CommitResult> {
    const refused = this.refuse;
    const result = await super.commit();
    const failed = [...result.failed];
    for (const op of this.commits.at(-1) ?? []) {
      if (op.kind === 'add' && refused.has(op.net.text)) {
        this.kernel.delete(op.net.text);
        failed.push({ net: op.net, op: 'add', error: 'refused' });
      }
    }
    return { applied: result.applied - failed.length + result.failed.length, failed };
  }
}

function setupHeld() {
  const backend = new HeldListBackend(true);
  const { blocker, advance, now } = setupRules(backend);
  return { backend, blocker, advance, now };
}

test('an unblock while a resync reads the kernel is not adopted back as reconciled', async () => {
  const { backend, blocker } = setupHeld();
  blocker.block({ net: net('192.0.2.1'), durationMs: 3_600_000, source: 'rule' });
  blocker.block({ net: net('192.0.2.2'), durationMs: 3_600_000, source: 'manual' });
  await blocker.settle();
  const gate = backend.hold();
  const resync = blocker.resync(true);
  await gate.started;
  blocker.unblock(net('192.0.2.1'));
  await blocker.settle();
  gate.open();
  assert.deepEqual(await resync, { added: 0, adopted: 0, removed: 0 });
  assert.equal(blocker.has(net('192.0.2.1')), false);
  assert.deepEqual([...backend.kernel.keys()], ['192.0.2.2']);
  await blocker.repair();
  assert.equal(blocker.has(net('192.0.2.1')), false, 'the next repair does not bring it back either');
  assert.deepEqual([...backend.kernel.keys()], ['192.0.2.2']);
});

test('a flush during a repair waits for it, and its result stands', async () => {
  const { backend, blocker } = setupHeld();
  for (let i = 1; i <= 3; i++) blocker.block({ net: net(`192.0.2.${i}`), durationMs: 3_600_000, source: 'rule' });
  await blocker.settle();
  const gate = backend.hold();
  const repair = blocker.repair();
  await gate.started;
  const flushed = blocker.flush();
  gate.open();
  await repair;
  assert.equal(await flushed, 3);
  assert.equal(blocker.size, 0);
  assert.equal(backend.kernel.size, 0);
  await blocker.repair();
  assert.equal(blocker.size, 0, 'nothing flushed comes back as reconciled');
  assert.equal(backend.kernel.size, 0, 'nothing flushed goes back into the kernel');
});

test('a repair asked for while one runs is that one: a hung check piles nothing up', async () => {
  const { backend, blocker } = setupHeld();
  let checks = 0;
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  backend.check = async () => {
    checks++;
    await held;
    return { intact: true, droppedPackets: null };
  };
  const first = blocker.repair();
  const again = [blocker.repair(), blocker.repair(), blocker.repair()];
  assert.ok(again.every((p) => p === first), 'the same check answers every caller');
  release();
  await Promise.all([first, ...again]);
  assert.equal(checks, 1);
  await blocker.repair();
  assert.equal(checks, 2, 'once it is done, the next repair checks again');
});

test('a block made while a resync reads the kernel reaches it once, by its own batch', async () => {
  const { backend, blocker } = setupHeld();
  const gate = backend.hold();
  const resync = blocker.resync(true);
  await gate.started;
  blocker.block({ net: net('192.0.2.9'), durationMs: 60_000, source: 'rule' });
  await blocker.settle();
  gate.open();
  assert.equal((await resync).added, 0, 'the stale listing does not make the resync add it again');
  const adds = backend.commits.flat().filter((o) => o.kind === 'add' && o.net.text === '192.0.2.9');
  assert.equal(adds.length, 1);
  assert.ok(backend.kernel.has('192.0.2.9'));
});

test('resyncs and repairs never read the kernel at the same time', async () => {
  const { backend, blocker } = setupHeld();
  blocker.block({ net: net('192.0.2.1'), durationMs: 60_000, source: 'rule' });
  const gate = backend.hold();
  const first = blocker.resync(true);
  await gate.started;
  const rest = [blocker.repair(), blocker.resync(true), blocker.repair()];
  gate.open();
  await Promise.all([first, ...rest]);
  assert.equal(backend.maxConcurrentLists, 1);
});

test('an element the kernel keeps a moment past its block\'s end is not adopted as a new block', async () => {
  const { backend, blocker, advance, now } = setupHeld();
  blocker.block({ net: net('192.0.2.1'), durationMs: 5000, source: 'rule' });
  await blocker.settle();
  // Kernel timeouts are whole seconds, and the batch went out a little later.
  backend.kernelExpiry.set('192.0.2.1', now() + 5900);
  advance(5000);
  blocker.sweep();
  assert.equal(blocker.has(net('192.0.2.1')), false);
  assert.equal((await blocker.resync(true)).adopted, 0);
  assert.equal(blocker.has(net('192.0.2.1')), false);
  // Put back by someone else, for longer: that one is a block to adopt.
  backend.kernelExpiry.set('192.0.2.1', now() + 3_600_000);
  assert.equal((await blocker.resync(true)).adopted, 1);
  assert.equal(blocker.get(net('192.0.2.1'))?.source, 'reconciled');
});

test('a client blocked again right after its block ended gets a fresh kernel timeout', async () => {
  const { backend, blocker, advance } = setupHeld();
  blocker.block({ net: net('192.0.2.1'), durationMs: 5000, source: 'rule' });
  await blocker.settle();
  advance(5000);
  blocker.sweep();
  blocker.block({ net: net('192.0.2.1'), durationMs: 10_000, source: 'rule' });
  await blocker.settle();
  const last = backend.commits.at(-1);
  assert.deepEqual(last?.map((o) => [o.kind, o.net.text, o.timeoutMs, o.replace]), [['add', '192.0.2.1', 10_000, true]],
    'the element may still be in the kernel, so the add renews it');
});

test('a batch refused during a resync leaves a repair due', async () => {
  const { backend, blocker } = setupHeld();
  blocker.adopt({ net: net('192.0.2.5'), rule: 'default', reason: null, source: 'rule', since: 1, expires: 2_000_000, hits: 9 });
  backend.refuse.add('192.0.2.5');
  assert.equal((await blocker.resync(true)).added, 1);
  assert.equal(blocker.needsRepair, true);
  backend.refuse.clear();
  await blocker.repair();
  assert.equal(blocker.needsRepair, false);
  assert.ok(backend.kernel.has('192.0.2.5'));
});

test('above the backend\'s read limit nothing lists the kernel: listings show no counters, checks trust the blocks, a start or a failed write offers every block again', async () => {
  const backend = new IntervalSetBackend();
  backend.readLimit = 2;
  const blocker = new Blocker({
    backend, isAllowed: () => false, log: createLogger('silent'), metrics: new Metrics({ activeBlocks: () => 0, trackedClients: () => 0 }),
  });
  try {
    for (const ip of ['198.51.100.1', '198.51.100.2', '198.51.100.3']) blocker.block({ net: net(ip), durationMs: 600_000, source: 'rule' });
    await blocker.settle();
    const views = [...await blocker.views()];
    assert.equal(views.length, 3);
    assert.ok(views.every((v) => v.dropped === null));
    await blocker.repair();
    assert.equal(backend.lists, 0, 'neither the listing nor the periodic check read the elements');
    // Something removed an element behind our back; a clean check does not see it (that would need a read) …
    backend.kernel.delete('198.51.100.2');
    await blocker.repair();
    assert.equal(backend.kernel.has('198.51.100.2'), false);
    // … a start-up resync offers every block again, without reading.
    const r = await blocker.resync(true);
    assert.deepEqual(r, { added: 3, adopted: 0, removed: 0 });
    assert.equal(backend.kernel.has('198.51.100.2'), true);
    assert.equal(backend.lists, 0);
  } finally {
    await blocker.close();
  }
});

test('a backend past the size it suits (iptables: 1000 rules) is said once, with what to use instead', async () => {
  const backend = new IntervalSetBackend();
  backend.advisedMax = 3;
  const lines: string[] = [];
  const log = createLogger('warn', new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done(); } }));
  const blocker = new Blocker({ backend, isAllowed: () => false, log, metrics: new Metrics({ activeBlocks: () => 0, trackedClients: () => 0 }) });
  try {
    for (let i = 1; i <= 6; i++) blocker.block({ net: net(`198.51.100.${i}`), durationMs: 600_000, source: 'rule' });
    const advice = lines.filter((l) => l.includes('use firewall.backend nftables or ipset'));
    assert.equal(advice.length, 1);
    assert.equal((JSON.parse(advice[0] ?? '{}') as { blocks: number }).blocks, 4);
  } finally {
    await blocker.close();
  }
});
