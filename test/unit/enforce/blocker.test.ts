import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseNetwork, type Network } from '../../../src/address.js';
import { OpQueue, type Backend, type CommitResult, type KernelEntry, type Op } from '../../../src/enforce/backend.js';
import { Blocker } from '../../../src/enforce/blocker.js';
import { createLogger } from '../../../src/log.js';
import { Metrics } from '../../../src/metrics.js';

/** A backend that keeps its "kernel" in a map and refuses overlapping elements, like an nft interval set. */
class IntervalSetBackend implements Backend {
  readonly kind = 'dry-run' as const;
  readonly expiresInKernel = true;
  readonly kernel = new Map<string, { net: Network; timeoutMs: number }>();
  readonly commits: Op[][] = [];
  private readonly queue = new OpQueue();
  async probe(): Promise<void> {}
  async ensure(): Promise<void> {}
  async check() {
    return { intact: true, droppedPackets: null };
  }
  add(net: Network, timeoutMs: number, replace: boolean): void {
    this.queue.add(net, timeoutMs, replace);
  }
  delete(net: Network): void {
    this.queue.delete(net);
  }
  pending(): number {
    return this.queue.size;
  }
  async commit(): Promise<CommitResult> {
    const ops = this.queue.drain();
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
    return [...this.kernel.values()].map((e) => ({ net: e.net, expiresAt: null }));
  }
  async flush(): Promise<number> {
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

function net(text: string): Network {
  const n = parseNetwork(text);
  assert.ok(n, text);
  return n;
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
