import { performance } from 'node:perf_hooks';
import type { Block } from './block.js';
import type { Config } from './config/schema.js';
import { formatDuration } from './duration.js';
import type { Backend, Blocker } from './enforce/index.js';
import { describe } from './errors.js';
import type { Logger } from './log.js';
import type { Receivers } from './receive/index.js';
import type { JournalKeeper, RestoreSummary } from './state/keeper.js';
import { VERSION } from './version.js';

/** The fields of the daemon's "rated started" log line: what it protects with and where it listens. */
export function startupRecord(p: {
  readonly config: Config;
  readonly source: string;
  readonly backend: Backend;
  readonly receivers: Receivers;
  readonly control: string;
  readonly redis: { mode: string; up: boolean } | null;
}): Record<string, unknown> {
  const c = p.config;
  return {
    version: VERSION,
    config: p.source,
    backend: p.backend.kind,
    table: p.backend.kind === 'dry-run' ? null : c.firewall.table,
    ...p.receivers.endpoints(),
    control: p.control,
    redis: p.redis ? { mode: p.redis.mode, up: p.redis.up } : null,
    rules: c.rules.map((r) => `${r.name}: ${r.limit}/${formatDuration(r.window)} → ${formatDuration(r.block)}`),
    ...(p.backend.moved ? { movedFromOlderLayout: p.backend.moved } : {}),
  };
}

/**
 * The start-up restore of the journal and its reconcile with the kernel
 * (SPEC §7), run behind the receivers: at 1,000,000 blocks they take
 * seconds, and the kernel's elements keep dropping meanwhile. Says when
 * they are done, with what the journal held.
 */
async function reconcileBehind(restoring: Promise<RestoreSummary | null>, blocker: Blocker, log: Logger): Promise<void> {
  const t0 = performance.now();
  let journal: RestoreSummary | null = null;
  try {
    journal = await restoring;
    const r = await blocker.resync(true);
    log.info({ journal, adopted: r.adopted, restored: r.added, removed: r.removed, reconcileMs: Math.round(performance.now() - t0) }, 'reconciled with the kernel');
  } catch (err) {
    log.error({ journal, err: describe(err) }, 'reconcile with the kernel failed; the next check retries');
  }
}

/**
 * Starts the journal's restore behind the receivers, then the reconcile with
 * the kernel (`onReconciled` once it is done, or failed), and hands the
 * restored blocks to Redis, which may lack those decided while it was away.
 * Returns the restore: answers about the blocks wait for it, since a block
 * lifted before it was read would come back.
 */
export function restoreBehind(p: {
  readonly keeper: JournalKeeper | null;
  readonly blocker: Blocker;
  readonly redis: { recheck(blocks: Iterable<Block>): void } | null;
  readonly log: Logger;
  readonly onReconciled: () => void;
}): Promise<RestoreSummary | null> {
  const restored = p.keeper?.restoreAsync() ?? Promise.resolve(null);
  void restored.then(() => p.redis?.recheck(p.blocker.all()), () => undefined);
  void reconcileBehind(restored, p.blocker, p.log).finally(p.onReconciled);
  return restored;
}
