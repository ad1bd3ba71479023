import { parseBlockTarget } from '../../block.js';
import type { Explanation } from '../../explain.js';
import { api, daemonOrKernel, out, type GlobalArgs } from '../context.js';
import { printable, remaining } from '../format.js';

/**
 * `rated explain <ip>`: why an address is or is not blocked, from the daemon
 * or, when it is down, from the journal and the kernel (no counts then).
 */
export async function explainCommand(args: GlobalArgs & { target: string; json?: boolean }): Promise<void> {
  parseBlockTarget(args.target);
  const e = await daemonOrKernel<Explanation>(
    args,
    async () => (await api(args, 'GET', `/explain/${encodeURIComponent(args.target)}`)).body as Explanation,
    async (config) => {
      const { offline } = await import('../offline.js');
      const { explain } = await import('../../explain.js');
      return offline(config, true, (_op, parts) => explain(args.target, { ...parts, limiter: null, ipv6Prefix: config.ipv6Prefix }));
    },
  );
  if (args.json) { out(JSON.stringify(e, null, 2)); return; }
  out(`${e.ip}${e.client === e.ip ? '' : ` (counted and blocked as ${e.client})`}`);
  out(`allowed:  ${e.allowed === null ? 'no' : `yes, never blocked: ${e.allowed}`}`);
  const b = e.blocked;
  if (b === null) out('blocked:  no');
  else {
    const until = b.expires === null ? 'no expiry' : `until ${b.expires} (${remaining(Date.parse(b.expires) - Date.now())} left)`;
    const by = b.source === 'rule' ? `rule ${printable(b.rule ?? '?')}` : b.source === 'manual' ? 'rated block (manual)'
      : b.source === 'cluster' ? 'another node (cluster)' : 'an element found in the kernel (reconciled)';
    out(`blocked:  yes${b.ip === e.ip ? '' : ` as ${b.ip}`}, by ${by}, ${until}`);
    out(`          since ${b.since ?? 'unknown'}; ${printable(b.reason ?? 'no reason given')}${b.dropped ? `; dropped ${b.dropped.packets} packets, ${b.dropped.bytes} bytes` : ''}`);
  }
  if (e.rules === null) { out('counts:   not known: the daemon is down (this came from the journal and the kernel)'); return; }
  for (const r of e.rules) {
    out(`rule ${printable(r.rule)}: ${r.hits} of ${r.limit} in ${r.window}${b === null && e.allowed === null ? `; ${r.toBlock} more would block it` : ''}`);
  }
}
