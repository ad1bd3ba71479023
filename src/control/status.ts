import type { BlockView } from '../block.js';
import type { Metrics } from '../metrics.js';
import { VERSION } from '../version.js';

/** What `rated status` is made of. */
export interface StatusParts {
  readonly startedAt: number;
  readonly config: string;
  readonly backend: string;
  readonly table: string | null;
  readonly receivers: Record<string, unknown>;
  readonly trackedClients: number;
  readonly activeBlocks: number;
  readonly stats: Metrics;
  readonly redis: unknown;
  readonly lastErrors: ReadonlyArray<{ at: string; error: string }>;
}

/** The reply of `GET /status` (SPEC §8). */
export function statusView(p: StatusParts): Record<string, unknown> {
  const s = p.stats;
  return {
    status: 'up',
    version: VERSION,
    pid: process.pid,
    startedAt: new Date(p.startedAt).toISOString(),
    uptime: Math.round((Date.now() - p.startedAt) / 1000),
    config: p.config,
    backend: p.backend,
    table: p.table,
    receivers: p.receivers,
    trackedClients: p.trackedClients,
    activeBlocks: p.activeBlocks,
    droppedPackets: s.droppedPackets,
    dropped: s.dropped,
    firewall: {
      batches: s.firewallBatches,
      elements: s.firewallElements,
      refused: s.firewallRefused,
      driftRepairs: s.driftRepairs,
    },
    redis: p.redis,
    lastErrors: [...p.lastErrors],
  };
}

/** A client nearest a limit, as `rated top` shows it. */
export interface NearLimitView {
  readonly client: string;
  readonly rule: string;
  readonly hits: number;
  readonly limit: number;
}

/** The reply of `GET /top`: counters `rated top` turns into rates, and what is happening now. */
export interface TopView {
  readonly at: string;
  readonly uptime: number;
  readonly backend: string;
  readonly activeBlocks: number;
  readonly trackedClients: number;
  /** Per receiver: notifications accepted and rejected so far. */
  readonly receivers: Record<string, { received: number; rejected: number }>;
  /** Blocks started so far, and lifted. */
  readonly blocks: number;
  readonly unblocks: number;
  /** Packets and bytes our rules dropped so far; null without counters. */
  readonly droppedPackets: number | null;
  readonly redis: { up: boolean; mode: string } | null;
  readonly closest: readonly NearLimitView[];
  readonly latest: readonly BlockView[];
}

/** `GET /top` from the daemon's parts. */
export function topView(p: {
  startedAt: number; backend: string; activeBlocks: number; trackedClients: number; stats: Metrics;
  redis: { up: boolean; mode: string } | null; closest: readonly NearLimitView[]; latest: readonly BlockView[];
}): TopView {
  const receivers: Record<string, { received: number; rejected: number }> = {};
  const of = (name: string): { received: number; rejected: number } => (receivers[name] ??= { received: 0, rejected: 0 });
  for (const [name, n] of p.stats.received.values) of(name).received += n;
  for (const [key, n] of p.stats.rejected.values) of(key.split('\t')[0] ?? key).rejected += n;
  return {
    at: new Date().toISOString(),
    uptime: Math.round((Date.now() - p.startedAt) / 1000),
    backend: p.backend,
    activeBlocks: p.activeBlocks,
    trackedClients: p.trackedClients,
    receivers,
    blocks: p.stats.blocks.total(),
    unblocks: p.stats.unblocks.total(),
    droppedPackets: p.stats.droppedPackets,
    redis: p.redis ? { up: p.redis.up, mode: p.redis.mode } : null,
    closest: p.closest,
    latest: p.latest,
  };
}
