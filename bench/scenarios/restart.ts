// Restart at attack scale: how long `rated run` takes until its receivers
// answer ("rated started") and until its reconcile with the kernel, which
// runs behind them, is done — with 100,000 and 1,000,000 blocks in its
// journal and its nft set, against a start with nothing to restore, in the
// same run — and the daemon's memory once it is done.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createNamespace, type Namespace } from '../../test/helpers/netns.js';
import { benchAddress, type BenchContext, type Scenario } from '../lib/context.js';
import { interleave, median, spread } from '../lib/interleave.js';
import { readMemory } from '../lib/proc.js';
import { startBenchRated } from '../lib/rated.js';

const NAME = 'restart';
const RULE = { name: 'bench', limit: 360, window: '120s', block: '6h' };

export const restart: Scenario = {
  name: NAME,
  title: 'Restart: start-up with 100,000 and 1,000,000 blocks in the journal and the kernel',
  tools: ['ip', 'nft', 'taskset'],
  root: true,
  async run(ctx) {
    for (const blocks of ctx.quick ? [20_000] : [100_000, 1_000_000]) await measure(ctx, blocks);
  },
};

interface Start {
  readonly startedMs: number;
  readonly reconciledMs: number;
  readonly rssAtReconcileMB: number | null;
  /** Once quiet (SETTLE_MS after the reconcile). */
  readonly rssMB: number | null;
}

const SETTLE_MS = 25_000;

async function measure(ctx: BenchContext, blocks: number): Promise<void> {
  const label = blocks.toLocaleString('en-US');
  const empty = await createNamespace('rb-start0');
  const full = await createNamespace('rb-startN');
  try {
    const dirs = { empty: join(ctx.scratch, `restart-empty-${blocks}`), full: join(ctx.scratch, `restart-full-${blocks}`) };
    for (const d of Object.values(dirs)) mkdirSync(join(d, 'state'), { recursive: true, mode: 0o750 });
    writeJournal(join(dirs.full, 'state'), blocks);
    const namespaces: Record<string, Namespace> = { empty, full };
    const starts = new Map<string, Start[]>();
    const start = async (key: string): Promise<number> => {
      const rated = await startBenchRated({
        namespace: namespaces[key] as Namespace, scratch: ctx.scratch, cpus: ctx.cpus.server, http: 9101, rules: [RULE],
        dir: dirs[key as keyof typeof dirs], startTimeoutMs: 300_000,
      });
      const atReconcile = readMemory(rated.proc.pid)?.rssMB ?? null;
      // Once quiet, the daemon gives back what reading the journal and the kernel left behind.
      await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
      const s: Start = {
        startedMs: Number(rated.started.startedMs), reconciledMs: Number(rated.started.reconciledAfterMs), rssAtReconcileMB: atReconcile,
        rssMB: readMemory(rated.proc.pid)?.rssMB ?? null,
      };
      await rated.stop();
      starts.set(key, [...(starts.get(key) ?? []), s]);
      return s.startedMs / 1000;
    };
    // The first start of `full` puts the journal's blocks in the kernel; the rounds after it restart onto both.
    ctx.log(`restart with ${label} blocks: a first start fills the kernel from the journal`);
    await start('full');
    starts.delete('full');
    const rounds = Math.min(ctx.rounds, 2);
    ctx.log(`start-up, ${rounds} round(s): nothing to restore, and ${label} blocks in the journal and the kernel`);
    const runs = await interleave(['empty', 'full'], rounds, start);
    const fullStarts = starts.get('full') ?? [];
    const emptyMs = median((runs.get('empty') ?? []).map((s) => s * 1000));
    ctx.results.add(NAME, {
      name: `receivers answer after a restart with ${label} blocks`,
      value: median(fullStarts.map((s) => s.startedMs)) / 1000,
      unit: 's',
      baseline: { name: 'start-up with nothing to restore', value: emptyMs / 1000, unit: 's' },
      ratio: 'lower',
      target: { of: 'value', op: '<=', bound: 1 + emptyMs / 1000 },
      note: [`from spawn to the "rated started" line (the node start-up included); the target: within 1 s more than a start with nothing`,
        spread(fullStarts.map((s) => s.startedMs / 1000), (s) => `${s.toFixed(2)} s`)].filter(Boolean).join('; '),
    });
    ctx.results.add(NAME, {
      name: `reconcile with the kernel done after a restart with ${label} blocks`,
      value: median(fullStarts.map((s) => s.reconciledMs)) / 1000,
      unit: 's',
      baseline: null,
      ratio: null,
      target: null,
      note: 'from spawn to the "reconciled with the kernel" line; the receivers answer and the kernel drops meanwhile',
    });
    const rss = fullStarts.map((s) => s.rssMB).filter((v): v is number => v !== null);
    const atReconcile = fullStarts.map((s) => s.rssAtReconcileMB).filter((v): v is number => v !== null);
    ctx.results.add(NAME, {
      name: `daemon memory with ${label} blocks, ${SETTLE_MS / 1000} s after the reconcile`,
      value: rss.length > 0 ? Math.max(...rss) : null,
      unit: 'MB',
      baseline: { name: 'with nothing', value: Math.max(...(starts.get('empty') ?? []).map((s) => s.rssMB ?? 0)), unit: 'MB' },
      ratio: null,
      target: { of: 'value', op: '<=', bound: blocks > 100_000 ? 600 : 150 },
      note: `VmRSS from /proc/PID/status; right after the reconcile line ${atReconcile.length > 0 ? Math.max(...atReconcile).toFixed(0) : '?'} MB`,
    });
  } finally {
    await empty.delete();
    await full.delete();
  }
}

/** A journal of `n` rule blocks with six hours left, as the daemon writes it. */
function writeJournal(state: string, n: number): void {
  const now = Date.now();
  const parts: string[] = [];
  for (let k = 0; k < n; k++) {
    parts.push(JSON.stringify({ ip: benchAddress(k), rule: RULE.name, reason: 'bench', source: 'rule', since: now, expires: now + 6 * 3_600_000, hits: 361 }));
  }
  writeFileSync(join(state, 'blocks.json'), `{"version":1,"savedAt":"${new Date(now).toISOString()}","blocks":[${parts.join(',')}],"offences":[]}`, { mode: 0o640 });
}
