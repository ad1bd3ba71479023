import type { Config } from './config/schema.js';
import { formatDuration } from './duration.js';
import type { Backend } from './enforce/index.js';
import type { Receivers } from './receive/index.js';
import type { RestoreSummary } from './state/keeper.js';
import { VERSION } from './version.js';

/** The fields of the daemon's "rated started" log line: what it protects with, where it listens, what it restored. */
export function startupRecord(p: {
  readonly config: Config;
  readonly source: string;
  readonly backend: Backend;
  readonly receivers: Receivers;
  readonly control: string;
  readonly redis: { mode: string; up: boolean } | null;
  readonly restored: RestoreSummary | null;
  readonly reconciled: { added: number; adopted: number };
  readonly reconcileMs: number;
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
    journal: p.restored,
    adopted: p.reconciled.adopted,
    restored: p.reconciled.added,
    ...(p.backend.moved ? { movedFromOlderLayout: p.backend.moved } : {}),
    reconcileMs: p.reconcileMs,
  };
}
