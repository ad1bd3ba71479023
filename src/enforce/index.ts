import { RatedError } from '../errors.js';
import type { Config } from '../config/schema.js';
import type { Backend, BackendKind } from './backend.js';
import { DryRunBackend } from './dry-run.js';
import { IpsetBackend } from './ipset.js';
import { IptablesBackend } from './iptables.js';
import { NftablesBackend } from './nftables.js';
import type { Runner } from '../run-command.js';

export type { Backend, BackendKind, KernelEntry } from './backend.js';
export { Blocker, type BlockRequest } from './blocker.js';
export { createRunner, type Runner } from '../run-command.js';

/** Builds one backend of the given kind. */
export function makeBackend(kind: BackendKind, firewall: Config['firewall'], run: Runner, ipv6Prefix = 64): Backend {
  switch (kind) {
    case 'nftables':
      return new NftablesBackend(run, {
        table: firewall.table, hook: firewall.hook, priority: firewall.priority, ipv6Prefix, maxBlocks: firewall.maxBlocks,
      });
    case 'ipset':
      return new IpsetBackend(run, { table: firewall.table, hook: firewall.hook, maxElements: firewall.maxBlocks, ipv6Prefix });
    case 'iptables':
      return new IptablesBackend(run, { table: firewall.table, hook: firewall.hook });
    case 'dry-run':
      return new DryRunBackend();
  }
}

/** The order in which `auto` tries the backends: sets before per-block rules. */
export const AUTO_ORDER: readonly BackendKind[] = ['nftables', 'ipset', 'iptables'];

/**
 * Picks the configured backend, or with `auto` the first usable one, and
 * checks that it works here. Throws FIREWALL_UNUSABLE naming --dry-run.
 */
export async function selectBackend(firewall: Config['firewall'], run: Runner, dryRun: boolean, ipv6Prefix = 64): Promise<Backend> {
  if (dryRun || firewall.backend === 'dry-run') return new DryRunBackend();
  const candidates: BackendKind[] = firewall.backend === 'auto' ? [...AUTO_ORDER] : [firewall.backend];
  const reasons: string[] = [];
  for (const kind of candidates) {
    try {
      const backend = makeBackend(kind, firewall, run, ipv6Prefix);
      await backend.probe();
      return backend;
    } catch (err) {
      reasons.push(err instanceof Error ? err.message : String(err));
    }
  }
  throw new RatedError('FIREWALL_UNUSABLE', `no usable firewall backend (${reasons.join('; ')}); run as root, or try the rules with --dry-run`);
}
