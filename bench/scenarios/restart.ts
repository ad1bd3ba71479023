// Restart: how long `rated run` takes to say "rated started" when its
// journal and its nft set both hold 100,000 blocks (it reconciles the two
// before it starts protecting), against a start with nothing to reconcile,
// in the same run.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseNetwork, type Network } from '../../src/address.js';
import { NftablesBackend } from '../../src/enforce/nftables.js';
import { createNamespace, type Namespace } from '../../test/helpers/netns.js';
import { waitFor } from '../../test/helpers/wait-for.js';
import { benchAddress, benchRunner, type BenchContext, type Scenario } from '../lib/context.js';
import { interleave, median, spread } from '../lib/interleave.js';
import { startBenchRated } from '../lib/rated.js';

const NAME = 'restart';
const RULE = { name: 'bench', limit: 360, window: '120s', block: '6h' };

export const restart: Scenario = {
  name: NAME,
  title: 'Restart: start-up with 100,000 blocks in the journal and the kernel',
  tools: ['ip', 'nft', 'taskset'],
  root: true,
  async run(ctx) {
    const blocks = ctx.quick ? 20_000 : 100_000;
    const label = blocks.toLocaleString('en-US');
    const empty = await createNamespace('rb-start0');
    const full = await createNamespace('rb-startN');
    try {
      const dirs = { empty: join(ctx.scratch, 'restart-empty'), full: join(ctx.scratch, 'restart-full') };
      for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
      await prepare(ctx, full, dirs.full, blocks);
      const namespaces: Record<string, Namespace> = { empty, full };
      const lines = new Map<string, Record<string, unknown>>();
      const start = async (key: string): Promise<number> => {
        const t0 = performance.now();
        const rated = await startBenchRated({
          namespace: namespaces[key] as Namespace, scratch: ctx.scratch, cpus: ctx.cpus.server, http: 9101, rules: [RULE],
          dir: dirs[key as keyof typeof dirs], startTimeoutMs: 120_000,
        });
        const seconds = (performance.now() - t0) / 1000;
        lines.set(key, rated.started);
        await rated.stop();
        return seconds;
      };
      // A start with 100,000 blocks takes seconds: two rounds are enough for a median.
      const rounds = Math.min(ctx.rounds, 2);
      ctx.log(`start-up, ${rounds} round(s): nothing to reconcile, and ${label} blocks in the journal and the kernel`);
      const runs = await interleave(['empty', 'full'], rounds, start);
      const started = lines.get('full') ?? {};
      const journal = started.journal as { blocks?: number } | undefined;
      const fullRuns = runs.get('full') as number[];
      ctx.results.add(NAME, {
        name: `start-up with ${label} blocks in the journal and the kernel`,
        value: median(fullRuns),
        unit: 's',
        baseline: { name: 'start-up with nothing to reconcile', value: median(runs.get('empty') as number[]), unit: 's' },
        ratio: 'lower',
        target: { of: 'value', op: '<=', bound: 2 },
        note: [`from spawn to the "rated started" line; journal ${journal?.blocks ?? '?'} blocks, adopted ${String(started.adopted)}, re-added ${String(started.restored)}`,
          spread(fullRuns, (s) => `${s.toFixed(2)} s`)].filter(Boolean).join('; '),
      });
    } finally {
      await empty.delete();
      await full.delete();
    }
  },
};

/**
 * Puts `n` elements in rated's set, lets one daemon adopt them (it writes
 * them to its journal) and stops it, so the next start finds the same blocks
 * in both places.
 */
async function prepare(ctx: BenchContext, ns: Namespace, dir: string, n: number): Promise<void> {
  const backend = new NftablesBackend(benchRunner(ns), { table: 'rated', hook: 'input', priority: -10, ipv6Prefix: 64, maxBlocks: 1_048_576 });
  await backend.ensure();
  for (let k = 0; k < n; k++) backend.add(parseNetwork(benchAddress(k)) as Network, 6 * 3_600_000, false);
  const result = await backend.commit();
  if (result.failed.length > 0) throw new Error(`${result.failed.length} elements refused: ${result.failed[0]?.error}`);
  const rated = await startBenchRated({ namespace: ns, scratch: ctx.scratch, cpus: ctx.cpus.server, http: 9101, rules: [RULE], dir, startTimeoutMs: 120_000 });
  await rated.stop();
  const journal = join(dir, 'state', 'blocks.json');
  await waitFor(() => existsSync(journal), { timeoutMs: 5000, what: journal });
  const saved = (JSON.parse(readFileSync(journal, 'utf8')) as { blocks?: unknown[] }).blocks?.length ?? 0;
  if (saved !== n) throw new Error(`the journal holds ${saved} blocks after adopting ${n}`);
}
