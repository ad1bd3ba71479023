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
