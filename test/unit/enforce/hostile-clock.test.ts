// A wall-clock step (HARDENING F13: an NTP step, a VM resumed, an operator's
// `date -s`) against the blocker. Kernel timeouts are relative and run on
// monotonic time; the daemon times blocks on a steady clock (clock.ts), so a
// step neither lifts a block early nor keeps it past its kernel element,
// and kernel times read against the stepped system clock are moved back
// onto the steady one. Both clocks are injected: nothing here sleeps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Network } from '../../../src/address.js';
import { steadyClock } from '../../../src/clock.js';
import { QueuedBackend, type Backend, type CommitResult, type KernelEntry, type Op } from '../../../src/enforce/backend.js';
import { Blocker } from '../../../src/enforce/blocker.js';
import { createLogger } from '../../../src/log.js';
import { Metrics } from '../../../src/metrics.js';
import { net } from '../../helpers/net.js';

const HOUR = 3_600_000;
const MINUTE = 60_000;

/** The two clocks of a host: the system clock, which steps, and the monotonic one, which does not. */
class Clocks {
  wall = Date.UTC(2026, 10, 22, 10, 0, 0);
  mono = 1_000_000;
  advance(ms: number): void {
    this.wall += ms;
    this.mono += ms;
  }
  step(ms: number): void {
    this.wall += ms;
  }
}

/** A set with relative timeouts on monotonic time, listed against the system clock, as nft does. */
class KernelSet extends QueuedBackend implements Backend {
  readonly kind = 'dry-run' as const;
  readonly expiresInKernel = true;
  readonly readLimit = Number.POSITIVE_INFINITY;
  readonly deadlines = new Map<string, { net: Network; until: number }>();
  constructor(private readonly clocks: Clocks) {
    super();
  }
  async probe(): Promise<void> {}
  async ensure(): Promise<void> {}
  async check() {
    return { intact: true, droppedPackets: null };
  }
  protected async apply(ops: Op[]): Promise<CommitResult> {
    for (const op of ops) {
      if (op.kind === 'delete') this.deadlines.delete(op.net.text);
      else this.deadlines.set(op.net.text, { net: op.net, until: this.clocks.mono + Math.ceil(op.timeoutMs / 1000) * 1000 });
    }
    return { applied: ops.length, failed: [] };
  }
  async list(): Promise<KernelEntry[]> {
    this.expire();
    return [...this.deadlines.values()].map((e) => ({ net: e.net, expiresAt: this.clocks.wall + (e.until - this.clocks.mono) }));
  }
  async flush(): Promise<number> {
    const n = this.deadlines.size;
    this.deadlines.clear();
    return n;
  }
  /** What the kernel still holds now. */
  held(): string[] {
    this.expire();
    return [...this.deadlines.keys()].sort();
  }
  private expire(): void {
    for (const [k, e] of this.deadlines) if (e.until <= this.clocks.mono) this.deadlines.delete(k);
  }
}


function setup(clock: 'steady' | 'wall' = 'steady') {
  const clocks = new Clocks();
  const kernel = new KernelSet(clocks);
  const now = clock === 'steady' ? steadyClock(() => clocks.wall, () => clocks.mono) : () => clocks.wall;
  const blocker = new Blocker({
    backend: kernel, isAllowed: () => false, log: createLogger('silent'),
    metrics: new Metrics({ activeBlocks: () => 0, trackedClients: () => 0 }),
    now, systemNow: () => clocks.wall, batchDelayMs: 0,
  });
  return { clocks, kernel, blocker };
}

test('the steady clock follows monotonic time and ignores steps of the system clock', () => {
  const clocks = new Clocks();
  const c = steadyClock(() => clocks.wall, () => clocks.mono);
  const t0 = c();
  assert.equal(t0, clocks.wall, 'it starts at the wall-clock time');
  clocks.step(HOUR);
  assert.equal(c(), t0, 'a step forward does not move it');
  clocks.step(-2 * HOUR);
  assert.equal(c(), t0, 'nor one back');
  clocks.advance(1500);
  assert.equal(c(), t0 + 1500, 'time passing does');
});

test('a step back of an hour: the block still ends with its kernel element, not an hour later', async () => {
  const { clocks, kernel, blocker } = setup();
  blocker.block({ net: net('192.0.2.1'), durationMs: 10 * MINUTE, source: 'rule', rule: 'r' });
  await blocker.settle();
  assert.deepEqual(kernel.held(), ['192.0.2.1']);
  clocks.step(-HOUR);
  clocks.advance(5 * MINUTE);
  assert.deepEqual(await blocker.resync(true), { added: 0, adopted: 0, removed: 0 }, 'mid-way, nothing is renewed or adopted');
  clocks.advance(5 * MINUTE + 1000);
  blocker.sweep();
  assert.equal(blocker.size, 0, 'lifted when its ten minutes are up');
  assert.deepEqual(kernel.held(), [], 'as the kernel lifted it');
  assert.deepEqual(await blocker.resync(true), { added: 0, adopted: 0, removed: 0 }, 'and nothing puts it back');
});

test('a step forward of an hour: the block is not lifted early, nor renewed, and ends on time', async () => {
  const { clocks, kernel, blocker } = setup();
  blocker.block({ net: net('2001:db8:7::/64'), durationMs: 10 * MINUTE, source: 'rule', rule: 'r' });
  await blocker.settle();
  const expires = blocker.get(net('2001:db8:7::/64'))?.expires;
  clocks.step(HOUR);
  clocks.advance(MINUTE);
  blocker.sweep();
  assert.equal(blocker.size, 1, 'still blocked an hour "later"');
  assert.deepEqual(await blocker.resync(true), { added: 0, adopted: 0, removed: 0 }, 'the kernel\'s time matches ours: no renewal');
  assert.equal(blocker.get(net('2001:db8:7::/64'))?.expires, expires);
  clocks.advance(9 * MINUTE + 1000);
  blocker.sweep();
  assert.equal(blocker.size, 0);
  assert.deepEqual(kernel.held(), []);
});

test('an element adopted after a step keeps the kernel\'s remaining time', async () => {
  const { clocks, kernel, blocker } = setup();
  // Left by an earlier run: ten minutes to go in the kernel.
  kernel.add(net('198.51.100.9'), 10 * MINUTE, false);
  await kernel.commit();
  clocks.step(-HOUR);
  assert.deepEqual(await blocker.resync(true), { added: 0, adopted: 1, removed: 0 });
  clocks.advance(10 * MINUTE + 1000);
  blocker.sweep();
  assert.equal(blocker.size, 0, 'lifted with its kernel element, not an hour later');
  assert.deepEqual(await blocker.resync(true), { added: 0, adopted: 0, removed: 0 });
  assert.deepEqual(kernel.held(), []);
});

test('why: timed on the system clock, a step back keeps a block an hour past its kernel element', async () => {
  const { clocks, kernel, blocker } = setup('wall');
  blocker.block({ net: net('192.0.2.2'), durationMs: 10 * MINUTE, source: 'rule', rule: 'r' });
  await blocker.settle();
  clocks.step(-HOUR);
  clocks.advance(10 * MINUTE + 1000);
  blocker.sweep();
  assert.deepEqual(kernel.held(), [], 'the kernel lifted it');
  assert.equal(blocker.size, 1, 'but the blocker, on the stepped clock, still holds it');
  const r = await blocker.resync(true);
  assert.equal(r.added, 1, 'and a resync would put it back for another hour');
});
