import { createInterface } from 'node:readline/promises';
import { clientOf } from '../../address.js';
import { parseBlockTarget } from '../../daemon.js';
import { RatedError } from '../../errors.js';
import type { BlockView } from '../../enforce/index.js';
import { api, configOf, daemonOrKernel, forgetInJournal, out, type GlobalArgs } from '../context.js';
import { blocksTable } from '../format.js';

/** `rated list`: active blocks, from the daemon or, when it is down, from the kernel. */
export async function list(args: GlobalArgs & { json?: boolean }): Promise<void> {
  const blocks = await daemonOrKernel<BlockView[]>(
    args,
    async () => (await api(args, 'GET', '/blocks')).body as BlockView[],
    async (backend) => (await backend.list()).map((e) => ({
      ip: e.net.text, rule: null, reason: null, source: 'reconciled' as const, since: null,
      expires: e.expiresAt === null ? null : new Date(e.expiresAt).toISOString(), hits: null, dropped: e.dropped ?? null,
    })),
  );
  out(args.json ? JSON.stringify(blocks, null, 2) : blocksTable(blocks));
}

/** `rated block`: a manual block through the daemon. */
export async function block(args: GlobalArgs & { target: string; for?: string; reason?: string; json?: boolean }): Promise<void> {
  parseBlockTarget(args.target);
  const res = await api(args, 'POST', '/blocks', { ip: args.target, for: args.for, reason: args.reason });
  const b = res.body as BlockView & { outcome: string };
  if (args.json) return out(JSON.stringify(b, null, 2));
  const verb = b.outcome === 'added' ? 'blocked' : b.outcome === 'extended' ? 'extended the block of' : 'already blocked:';
  out(`${verb} ${b.ip} until ${b.expires ?? 'never'}${b.outcome === 'unchanged' ? ' (a block is never shortened)' : ''}`);
}

/** `rated unblock`: lifts one block and forgets the client's counters. */
export async function unblock(args: GlobalArgs & { target: string }): Promise<void> {
  const net = parseBlockTarget(args.target);
  const lifted = await daemonOrKernel<string | null>(
    args,
    async () => {
      try {
        return ((await api(args, 'DELETE', `/blocks/${encodeURIComponent(args.target)}`)).body as BlockView).ip;
      } catch (err) {
        if (err instanceof RatedError && err.code === 'NOT_FOUND') return null;
        throw err;
      }
    },
    async (backend) => {
      // IPv6 clients are blocked per network, as the daemon does: an address stands for its network.
      const client = net.prefix === (net.family === 4 ? 32 : 128) ? clientOf(net, configOf(args).config.ipv6Prefix) : net;
      const kernel = await backend.list();
      const target = kernel.some((e) => e.net.text === net.text) ? net : client;
      const inJournal = forgetInJournal(args, (b) => b.net.text === net.text || b.net.text === target.text, client) > 0;
      if (!kernel.some((e) => e.net.text === target.text)) return inJournal ? target.text : null;
      backend.delete(target);
      const result = await backend.commit();
      if (result.failed.length > 0) throw new RatedError('FIREWALL_FAILED', `cannot remove ${target.text}: ${result.failed[0]?.error ?? ''}`);
      return target.text;
    },
  );
  if (lifted === null) throw new RatedError('NOT_FOUND', `${net.text} is not blocked (rated list shows what is)`);
  out(`unblocked ${lifted}`);
}

/** `rated flush`: lifts every block rated manages, and nothing else. */
export async function flush(args: GlobalArgs & { yes?: boolean }): Promise<void> {
  if (!args.yes) {
    if (!process.stdin.isTTY) throw new RatedError('USAGE', 'flush lifts every block: add --yes to confirm');
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    const answer = await rl.question('Lift every block rated manages? [y/N] ');
    rl.close();
    if (!/^y(es)?$/i.test(answer.trim())) return out('nothing lifted');
  }
  const lifted = await daemonOrKernel<number>(
    args,
    async () => ((await api(args, 'DELETE', '/blocks')).body as { lifted: number }).lifted,
    async (backend) => {
      // The kernel first: when it fails, the journal still holds every block.
      const inKernel = await backend.flush();
      const inJournal = forgetInJournal(args, () => true);
      return Math.max(inKernel ?? 0, inJournal);
    },
  );
  out(`lifted ${lifted} block${lifted === 1 ? '' : 's'}`);
}
