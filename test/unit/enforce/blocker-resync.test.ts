// A block lifted while a resync reads the kernel must not come back as a
// stranger: its element is still in what the resync read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { KernelEntry } from '../../../src/enforce/backend.js';
import { Blocker } from '../../../src/enforce/blocker.js';
import { DryRunBackend } from '../../../src/enforce/dry-run.js';
import { createLogger } from '../../../src/log.js';
import { Metrics } from '../../../src/metrics.js';
import { net } from '../../helpers/net.js';


/** The dry-run backend, with a list() that answers only when told while `hold` is set. */
class SlowListBackend extends DryRunBackend {
  private release: (() => void) | null = null;
  listing = false;
  hold = true;
  override async list(): Promise<KernelEntry[]> {
    const entries = await super.list();
    if (!this.hold) return entries;
    this.listing = true;
    await new Promise<void>((resolve) => {
      this.release = resolve;
    });
    this.listing = false;
    return entries;
  }
  answer(): void {
    this.release?.();
  }
}

async function setup() {
  const backend = new SlowListBackend();
  const blocker = new Blocker({
    backend, isAllowed: () => false, log: createLogger('silent'),
    metrics: new Metrics({ activeBlocks: () => 0, trackedClients: () => 0 }),
  });
  blocker.block({ net: net('203.0.113.1'), durationMs: 3_600_000, source: 'cluster' });
  blocker.block({ net: net('203.0.113.2'), durationMs: 3_600_000, source: 'rule' });
  await blocker.settle();
  return { backend, blocker };
}

async function whileListing(backend: SlowListBackend, blocker: Blocker, during: () => unknown) {
  const resync = blocker.resync(true);
  while (!backend.listing) await new Promise((r) => setImmediate(r));
  await during();
  backend.answer();
  const r = await resync;
  backend.hold = false;
  return r;
}

test('an unblock during the kernel read is not adopted back as reconciled', async () => {
  const { backend, blocker } = await setup();
  const r = await whileListing(backend, blocker, () => blocker.unblock(net('203.0.113.1')));
  assert.equal(r.adopted, 0);
  assert.equal(blocker.has(net('203.0.113.1')), false);
  await blocker.settle();
  assert.deepEqual((await backend.list()).map((e) => e.net.text), ['203.0.113.2'], 'the kernel lost the element');
});

test('a flush during the kernel read is not undone', async () => {
  const { backend, blocker } = await setup();
  let flushed: Promise<number> | null = null;
  const r = await whileListing(backend, blocker, () => {
    flushed = blocker.flush();
  });
  await (flushed as Promise<number> | null);
  assert.equal(r.adopted, 0);
  assert.equal(blocker.size, 0);
  assert.deepEqual(await backend.list(), []);
});
