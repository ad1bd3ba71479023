import { orderViews, parseBlockTarget, type BlockOrder, type BlockView, type ListQuery } from '../../block.js';
import { streamList } from '../../control/client.js';
import { RatedError } from '../../errors.js';
import { api, daemonOrKernel, onDaemon, out, OutBuffer, type GlobalArgs } from '../context.js';
import { TableWriter } from '../format.js';

// The daemon-down paths import ../offline.js (the daemon's parts) when they run; the rest never loads it.

/**
 * `rated list`: active blocks, streamed from the daemon as it sends them
 * (the first lines at once, even of 1,000,000), or when it is down read
 * from the kernel.
 */
export async function list(args: GlobalArgs & { json?: boolean; sort?: BlockOrder; limit?: number }): Promise<void> {
  const query: ListQuery = { ...(args.sort === undefined ? {} : { sort: args.sort }), ...(args.limit === undefined ? {} : { limit: args.limit }) };
  if (query.limit !== undefined && !(Number.isInteger(query.limit) && query.limit >= 1)) {
    throw new RatedError('USAGE', `--limit: expected a whole number from 1, got ${String(args.limit)}`);
  }
  const lines = new OutBuffer();
  const table = new TableWriter(lines.line);
  try {
    const down = await blockViews(args, query, (v) => {
      if (!args.json) table.row(v);
    }, args.json ? (text) => process.stdout.write(text) : undefined);
    if (down !== null) {
      if (args.json) { out(JSON.stringify(down, null, 2)); return; }
      for (const v of down) table.row(v);
    }
    if (!args.json) table.end();
  } finally {
    lines.flush();
  }
}

/**
 * The active blocks: streamed from the daemon to `each` (and its JSON text to
 * `raw`) and null returned, or when it is down read from the kernel (what
 * it holds, `source: reconciled`) and returned.
 */
export async function blockViews(args: GlobalArgs, query: ListQuery, each: (v: BlockView) => void, raw?: (text: string) => void): Promise<BlockView[] | null> {
  const params = new URLSearchParams(Object.entries(query).map(([k, v]): [string, string] => [k, String(v)])).toString();
  return daemonOrKernel<BlockView[] | null>(
    args,
    async () => {
      await onDaemon(args, (socket) => streamList(socket, `/blocks${params ? `?${params}` : ''}`, (v) => each(v as BlockView), raw));
      return null;
    },
    async (config) => orderViews((await (await import('../offline.js')).kernelOf(config).then((backend) => backend.list())).map((e) => ({
      ip: e.net.text, rule: null, reason: null, source: 'reconciled' as const, since: null,
      expires: e.expiresAt === null ? null : new Date(e.expiresAt).toISOString(), hits: null, dropped: e.dropped ?? null,
    })), query),
  );
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
    async (config) => (await import('../offline.js')).offline(config, true, async (op) => (await op.unblock(args.target))?.ip ?? null),
  );
  if (lifted === null) throw new RatedError('NOT_FOUND', `${net.text} is not blocked (rated list shows what is)`);
  out(`unblocked ${lifted}`);
}

/** `rated flush`: lifts every block rated manages, and nothing else. */
export async function flush(args: GlobalArgs & { yes?: boolean }): Promise<void> {
  if (!args.yes) {
    if (!process.stdin.isTTY) throw new RatedError('USAGE', 'flush lifts every block: add --yes to confirm');
    const { createInterface } = await import('node:readline/promises');
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    const answer = await rl.question('Lift every block rated manages? [y/N] ');
    rl.close();
    if (!/^y(es)?$/i.test(answer.trim())) { out('nothing lifted'); return; }
  }
  const lifted = await daemonOrKernel<number>(
    args,
    async () => ((await api(args, 'DELETE', '/blocks')).body as { lifted: number }).lifted,
    // The kernel first: when it fails, the journal still holds every block.
    async (config) => (await import('../offline.js')).offline(config, false, (op) => op.flush()),
  );
  out(`lifted ${lifted} block${lifted === 1 ? '' : 's'}`);
}
