import { createInterface } from 'node:readline/promises';
import { parseBlockTarget, type BlockView } from '../../block.js';
import { RatedError } from '../../errors.js';
import { api, daemonOrKernel, out, type GlobalArgs } from '../context.js';
import { kernelOf, offline } from '../offline.js';
import { blocksTable } from '../format.js';

/** `rated list`: active blocks, from the daemon or, when it is down, from the kernel. */
export async function list(args: GlobalArgs & { json?: boolean }): Promise<void> {
  const blocks = await daemonOrKernel<BlockView[]>(
    args,
    async () => (await api(args, 'GET', '/blocks')).body as BlockView[],
    async (config) => (await kernelOf(config).then((backend) => backend.list())).map((e) => ({
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
  if (args.json) { out(JSON.stringify(b, null, 2)); return; }
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
    async (config) => offline(config, true, async (op) => (await op.unblock(args.target))?.ip ?? null),
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
    if (!/^y(es)?$/i.test(answer.trim())) { out('nothing lifted'); return; }
  }
  const lifted = await daemonOrKernel<number>(
    args,
    async () => ((await api(args, 'DELETE', '/blocks')).body as { lifted: number }).lifted,
    // The kernel first: when it fails, the journal still holds every block.
    async (config) => offline(config, false, (op) => op.flush()),
  );
  out(`lifted ${lifted} block${lifted === 1 ? '' : 's'}`);
}
