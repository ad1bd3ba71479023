// The cost of many blocks to the web server: nginx throughput for a client
// that is not blocked, with no blocks, with 100,000 blocked addresses in
// rated's nft set, and with the same addresses as one iptables rule each
// (the predecessor's way). Three server namespaces side by side, one client
// namespace wired to each over its own veth pair, loaded in turn.
import { parseNetwork, type Network } from '../../src/address.js';
import { NftablesBackend } from '../../src/enforce/nftables.js';
import { createNamespace, veth, type Namespace } from '../../test/helpers/netns.js';
import { benchAddress, benchRunner, mustRun, type BenchContext, type Scenario } from '../lib/context.js';
import { interleave, median, spread } from '../lib/interleave.js';
import { startBenchNginx, type BenchNginx } from '../lib/nginx.js';
import { runWrk, type WrkResult } from '../lib/wrk.js';

const NAME = 'block-scaling';
const TABLE = { table: 'rated', hook: 'input', priority: -10, ipv6Prefix: 64, maxBlocks: 1_048_576 } as const;

interface Server {
  readonly key: 'none' | 'nft' | 'nft1m' | 'iptables';
  readonly name: string;
  /** 10.77.N.1 is the server, 10.77.N.2 the client. */
  readonly subnet: number;
}

const SERVERS: readonly Server[] = [
  { key: 'none', name: 'no blocks', subnet: 1 },
  { key: 'nft', name: 'blocked addresses in rated\'s nft set', subnet: 2 },
  { key: 'iptables', name: 'one iptables DROP rule per blocked address', subnet: 3 },
  { key: 'nft1m', name: '1,000,000 blocked addresses in rated\'s nft set', subnet: 4 },
];
/** Blocked addresses in the set of the `nft1m` server (left out with --quick). */
const MILLION = 1_000_000;

export const blockScaling: Scenario = {
  name: NAME,
  title: 'Cost of many blocks to the web server: nft set against per-address iptables rules',
  tools: ['ip', 'nft', 'iptables', 'iptables-restore', 'wrk', 'taskset', 'nginx', 'curl'],
  root: true,
  async run(ctx) {
    const blocks = 100_000;
    const shown = SERVERS.filter((s) => !(ctx.quick && s.key === 'nft1m'));
    const namespaces: Namespace[] = [];
    const servers: BenchNginx[] = [];
    try {
      const client = await createNamespace('rb-cli');
      namespaces.push(client);
      const urls = new Map<string, string>();
      for (const s of shown) {
        const ns = await createNamespace(`rb-${s.key}`);
        namespaces.push(ns);
        await veth(ns, client, { a: `10.77.${s.subnet}.1/24`, b: `10.77.${s.subnet}.2/24` });
        const url = `http://10.77.${s.subnet}.1/`;
        servers.push(await startBenchNginx({ namespace: ns, scratch: ctx.scratch, listen: '80', report: { kind: 'none' }, realip: false, cpus: ctx.cpus.server }, 'http://127.0.0.1/'));
        urls.set(s.key, url);
        await fill(ctx, ns, s.key, s.key === 'nft1m' ? MILLION : blocks);
      }
      const load = (key: string, seconds: number): Promise<WrkResult> => runWrk({ namespace: client, url: urls.get(key) as string, cpus: ctx.cpus.load, seconds });
      ctx.log(`warming up, then ${ctx.rounds} round(s) of ${ctx.seconds} s against each server from 10.77.N.2 (not blocked)`);
      for (const s of shown) await load(s.key, ctx.warmupSeconds);
      const runs = await interleave(shown.map((s) => s.key), ctx.rounds, (key) => load(key, ctx.seconds));
      report(ctx, runs, blocks);
    } finally {
      for (const s of servers) await s.stop();
      for (const ns of namespaces) await ns.delete();
    }
  },
};

/** Puts `n` blocked addresses in place the way each server does it, and checks they are all there. */
async function fill(ctx: BenchContext, ns: Namespace, key: Server['key'], n: number): Promise<void> {
  if (key === 'none') return;
  const t = performance.now();
  if (key === 'nft' || key === 'nft1m') {
    const backend = new NftablesBackend(benchRunner(ns), TABLE);
    await backend.ensure();
    // A transaction of 100,000 at a time, as rated's own storms go.
    for (let first = 0; first < n; first += 100_000) {
      for (let k = first; k < Math.min(n, first + 100_000); k++) backend.add(parseNetwork(benchAddress(k)) as Network, 3_600_000, false);
      const result = await backend.commit();
      if (result.failed.length > 0) throw new Error(`${result.failed.length} elements refused: ${result.failed[0]?.error}`);
    }
    // Reading 1,000,000 elements back takes nft 1.0.6 80–110 s: the commits' results stand for it.
    if (n > 100_000) {
      ctx.log(`${key}: ${n.toLocaleString('en-US')} blocked addresses committed in ${((performance.now() - t) / 1000).toFixed(1)} s`);
      return;
    }
    const r = await mustRun(ns, 'nft', ['-j', 'list', 'set', 'inet', 'rated', 'v4']);
    const elems = (JSON.parse(r.stdout) as { nftables: Array<{ set?: { elem?: unknown[] } }> }).nftables.find((i) => i.set)?.set?.elem?.length ?? 0;
    if (elems !== n) throw new Error(`rated's set holds ${elems} elements, expected ${n}`);
  } else {
    const rules = ['*filter', ':INPUT ACCEPT [0:0]'];
    for (let k = 0; k < n; k++) rules.push(`-A INPUT -s ${benchAddress(k)}/32 -j DROP`);
    rules.push('COMMIT', '');
    await mustRun(ns, 'iptables-restore', [], rules.join('\n'));
    const r = await mustRun(ns, 'iptables', ['-S', 'INPUT']);
    const count = r.stdout.split('\n').filter((l) => l.startsWith('-A INPUT')).length;
    if (count !== n) throw new Error(`INPUT holds ${count} rules, expected ${n}`);
  }
  ctx.log(`${key}: ${n.toLocaleString('en-US')} blocked addresses in place in ${((performance.now() - t) / 1000).toFixed(1)} s`);
}

function report(ctx: BenchContext, runs: Map<string, WrkResult[]>, blocks: number): void {
  const rps = (key: string): number => median((runs.get(key) ?? []).map((r) => r.rps));
  const none = { name: 'no blocks', value: rps('none'), unit: 'req/s' };
  const label = blocks.toLocaleString('en-US');
  const noteOf = (key: string): string | null => {
    const rs = runs.get(key) ?? [];
    const parts = [spread(rs.map((r) => r.rps)), `p99 latency ${median(rs.map((r) => r.latencyP99Ms ?? NaN)).toFixed(2)} ms`];
    const errors = rs.reduce((n, r) => n + r.socketErrors + r.non2xx, 0);
    if (errors > 0) parts.push(`${errors} errors or non-2xx answers`);
    return parts.filter(Boolean).join('; ');
  };
  ctx.results.add(NAME, { name: 'nginx, no blocks', value: none.value, unit: 'req/s', note: noteOf('none') });
  ctx.results.add(NAME, {
    name: `nginx, ${label} addresses in rated's nft set`,
    value: rps('nft'),
    unit: 'req/s',
    baseline: none,
    ratio: 'higher',
    target: { of: 'ratio', op: '>=', bound: 0.95 },
    note: noteOf('nft'),
  });
  if (runs.has('nft1m')) {
    ctx.results.add(NAME, {
      name: 'nginx, 1,000,000 addresses in rated\'s nft set',
      value: rps('nft1m'),
      unit: 'req/s',
      baseline: none,
      ratio: 'higher',
      target: { of: 'ratio', op: '>=', bound: 0.95 },
      note: noteOf('nft1m'),
    });
  }
  ctx.results.add(NAME, {
    name: `nginx, ${label} per-address iptables rules`,
    value: rps('iptables'),
    unit: 'req/s',
    baseline: none,
    ratio: 'higher',
    note: noteOf('iptables'),
  });
}
