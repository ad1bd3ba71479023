// One change with many blocks in force: rated's set layout (hash sets for
// addresses and client networks, small interval sets for other networks)
// against the older layout (interval sets holding everything), in the same
// run, on the same machine. With N blocks preloaded in each, the time of one
// `rated block`-sized commit (one add), one unblock (one delete), one renewal
// (delete + add), a batch of 100 renewals, and an emptying flush, through
// rated's own NftablesBackend. nft 1.0.6 reads every element of every
// interval set before any element command: that is the cost compared here.
import { performance } from 'node:perf_hooks';
import { parseNetwork, type Network } from '../../src/address.js';
import { NftablesBackend } from '../../src/enforce/nftables.js';
import { createNamespace, type Namespace } from '../../test/helpers/netns.js';
import { benchAddress, benchRunner, mustRun, type BenchContext, type Scenario } from '../lib/context.js';
import { median } from '../lib/interleave.js';
import { throughDaemon } from './scale-daemon.js';

const NAME = 'scale';
/** Renewals in one batch: deletes from a large interval set are quadratic in nft 1.0.6, so the older layout gets no more. */
const RENEWALS = 100;
const OPTS = { table: 'rated', hook: 'input', priority: -10, ipv6Prefix: 64, maxBlocks: 2_097_152 } as const;
const OLDER = (size: number): string => `table inet rated {
  set v4 { type ipv4_addr; flags interval,timeout; size ${size}; }
  set v6 { type ipv6_addr; flags interval,timeout; size ${size}; }
  chain block { type filter hook input priority -10; policy accept; ip saddr @v4 counter drop; ip6 saddr @v6 counter drop; }
}
`;

type Layout = 'hash' | 'interval';

export const scale: Scenario = {
  name: NAME,
  title: 'One change with 100,000 (and 1,000,000) blocks in force: hash-set layout against the older interval sets',
  tools: ['ip', 'nft', 'ipset', 'iptables'],
  root: true,
  async run(ctx) {
    const sizes = ctx.quick ? [100_000] : [100_000, 1_000_000];
    // Through the daemon, by packets: `rated block`/`unblock`, new offenders, renewals, unblocks, list, memory.
    // BENCH_SCALE_ONLY=nftables:1000000 measures that one pair alone, and nothing else.
    const only = process.env.BENCH_SCALE_ONLY?.split(':');
    for (const n of sizes) {
      for (const backend of ['nftables', 'ipset'] as const) {
        if (only === undefined || (only[0] === backend && Number(only[1]) === n)) await throughDaemon(ctx, backend, n);
      }
    }
    if (only !== undefined) return;
    for (const n of sizes) {
      // The older layout at 1,000,000 takes minutes per change: measured at 100,000 only.
      const layouts: Layout[] = n > 100_000 ? ['hash'] : ['hash', 'interval'];
      const figures = new Map<Layout, Figures>();
      for (const layout of layouts) figures.set(layout, await measure(ctx, layout, n));
      report(ctx, n, figures);
    }
  },
};

interface Figures {
  readonly add: number;
  readonly del: number;
  readonly renew: number;
  readonly renewBatch: number;
  readonly flush: number;
}

async function measure(ctx: BenchContext, layout: Layout, n: number): Promise<Figures> {
  const ns = await createNamespace('rb-scale');
  try {
    const backend = new NftablesBackend(benchRunner(ns), OPTS);
    const t0 = performance.now();
    if (layout === 'hash') await backend.ensure();
    else await mustRun(ns, 'nft', ['-f', '-'], OLDER(OPTS.maxBlocks));
    await preload(ns, layout, n);
    ctx.log(`${layout}: ${n.toLocaleString('en-US')} blocks in place in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    // The older layout is driven by hand: rated itself moves it at start.
    const run = async (script: string): Promise<number> => {
      const t = performance.now();
      await mustRun(ns, 'nft', ['-f', '-'], script);
      return performance.now() - t;
    };
    const commit = async (fill: () => void): Promise<number> => {
      fill();
      const t = performance.now();
      const r = await backend.commit();
      if (r.failed.length > 0) throw new Error(`${r.failed.length} refused: ${r.failed[0]?.error ?? ''}`);
      return performance.now() - t;
    };
    const addr = (k: number): Network => parseNetwork(`10.200.${Math.floor(k / 256) % 256}.${k % 256}`) as Network;
    const rounds = ctx.quick ? 3 : 5;
    const adds: number[] = [];
    const dels: number[] = [];
    const renews: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const a = addr(i);
      if (layout === 'hash') {
        adds.push(await commit(() => backend.add(a, 3_600_000, false)));
        renews.push(await commit(() => backend.add(a, 7_200_000, true)));
        dels.push(await commit(() => backend.delete(a)));
      } else {
        adds.push(await run(`add element inet rated v4 { ${a.text} timeout 1h }`));
        renews.push(await run(`delete element inet rated v4 { ${a.text} }\nadd element inet rated v4 { ${a.text} timeout 2h }`));
        dels.push(await run(`delete element inet rated v4 { ${a.text} }`));
      }
    }
    const batch = Array.from({ length: RENEWALS }, (_, k) => parseNetwork(benchAddress(k)) as Network);
    const renewBatch = layout === 'hash'
      ? await commit(() => { for (const b of batch) backend.add(b, 7_200_000, true); })
      : await run(`${batch.map((b) => `delete element inet rated v4 { ${b.text} }`).join('\n')}\nadd element inet rated v4 { ${batch.map((b) => `${b.text} timeout 2h`).join(', ')} }`);
    const tf = performance.now();
    if (layout === 'hash') await backend.flush();
    else await run('flush set inet rated v4');
    const flush = performance.now() - tf;
    return { add: median(adds), del: median(dels), renew: median(renews), renewBatch, flush };
  } finally {
    await ns.delete();
  }
}

/** `n` addresses into set v4, in transactions of 100,000. */
async function preload(ns: Namespace, layout: Layout, n: number): Promise<void> {
  const backend = new NftablesBackend(benchRunner(ns), OPTS);
  for (let first = 0; first < n; first += 100_000) {
    const last = Math.min(n, first + 100_000);
    if (layout === 'hash') {
      for (let k = first; k < last; k++) backend.add(parseNetwork(benchAddress(k)) as Network, 3_600_000, false);
      const r = await backend.commit();
      if (r.failed.length > 0) throw new Error(`preload: ${r.failed.length} refused: ${r.failed[0]?.error ?? ''}`);
    } else {
      const elems: string[] = [];
      for (let k = first; k < last; k++) elems.push(`${benchAddress(k)} timeout 1h`);
      await mustRun(ns, 'nft', ['-f', '-'], `add element inet rated v4 { ${elems.join(', ')} }\n`);
    }
  }
}

function report(ctx: BenchContext, n: number, figures: Map<Layout, Figures>): void {
  const hash = figures.get('hash');
  const older = figures.get('interval');
  if (!hash) return;
  const label = n.toLocaleString('en-US');
  const rows: Array<[keyof Figures, string, number | null]> = [
    ['add', 'one block (one add)', 100],
    ['del', 'one unblock (one delete)', 100],
    ['renew', 'one renewal (delete + add)', 100],
    ['renewBatch', `${RENEWALS} renewals in one transaction`, null],
    ['flush', 'flush (one `flush set`)', null],
  ];
  for (const [key, what, bound] of rows) {
    ctx.results.add(NAME, {
      name: `${what} with ${label} blocks in force, hash-set layout`,
      value: hash[key],
      unit: 'ms',
      baseline: older ? { name: 'the older interval-set layout', value: older[key], unit: 'ms' } : null,
      ratio: older ? 'lower' : null,
      target: bound === null ? null : { of: 'value', op: '<=', bound },
    });
  }
}
