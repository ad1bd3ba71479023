// Blocking speed. A block storm: N distinct offenders cross their limit at
// once through rated's HTTP receiver, and the time is taken until every one
// of them is an element of rated's nft set. Against it, in the same run, the
// predecessor's way: one firewall process per address (nft, then iptables,
// also with 10,000 rules in place). And one batch of 100,000 elements through
// rated's NftablesBackend against the same elements as one `nft -f -` text
// transaction.
import { spawn } from 'node:child_process';
import { execa } from 'execa';
import { createInterface } from 'node:readline';
import { parseNetwork, type Network } from '../../src/address.js';
import { NftablesBackend } from '../../src/enforce/nftables.js';
import { createNamespace, type Namespace } from '../../test/helpers/netns.js';
import { benchAddress, benchRunner, mustRun, tool, type BenchContext, type Scenario } from '../lib/context.js';
import { median } from '../lib/interleave.js';
import { startBenchRated } from '../lib/rated.js';
import { LUA } from '../lib/wrk.js';

const NAME = 'block-speed';
const PORT = 9101;
/** `limit: 1` blocks a client at its second notification; the window outlasts any storm, however slowly it is taken in. */
const STORM_RULE = { name: 'storm', limit: 1, window: '10m', block: '10m' };
const TABLE = { table: 'rated', hook: 'input', priority: -10, ipv6Prefix: 64, maxBlocks: 1_048_576 } as const;

export const blockSpeed: Scenario = {
  name: NAME,
  title: 'Blocking speed: block storms, one process per address, one big batch',
  tools: ['ip', 'nft', 'iptables', 'iptables-restore', 'wrk', 'taskset'],
  root: true,
  async run(ctx) {
    const storms = ctx.quick ? [10_000] : [10_000, 100_000, 1_000_000];
    const stormRates = new Map<number, number>();
    for (const n of storms) stormRates.set(n, await storm(ctx, n));
    const perProcess = await onePerAddress(ctx);
    const best = stormRates.get(10_000);
    if (best !== undefined) {
      ctx.results.add(NAME, {
        name: 'blocks/s: rated (10,000-offender storm) against one nft process per address',
        value: best,
        unit: 'blocks/s',
        baseline: { name: 'one nft process per address', value: perProcess.nft, unit: 'blocks/s' },
        ratio: 'higher',
      });
      ctx.results.add(NAME, {
        name: 'blocks/s: rated (10,000-offender storm) against one iptables process per address',
        value: best,
        unit: 'blocks/s',
        baseline: { name: 'one iptables process per address, 10,000 rules in place', value: perProcess.iptablesLoaded, unit: 'blocks/s' },
        ratio: 'higher',
      });
    }
    await bigBatch(ctx, ctx.quick ? 20_000 : 100_000);
  },
};

/** Elements of one set of ours, from `nft -j list set`. */
async function setElements(ns: Namespace, table: string, set: string): Promise<unknown[]> {
  const r = await mustRun(ns, 'nft', ['-j', 'list', 'set', 'inet', table, set]);
  const doc = JSON.parse(r.stdout) as { nftables?: Array<{ set?: { elem?: unknown[] } }> };
  return doc.nftables?.find((i) => i.set)?.set?.elem ?? [];
}

async function setSize(ns: Namespace, table: string, set: string): Promise<number> {
  return (await setElements(ns, table, set)).length;
}

/** Offenders 0..n-1 that are not in the set, for the report. */
async function missingFromSet(ns: Namespace, n: number): Promise<string[]> {
  const present = new Set((await setElements(ns, 'rated', 'v4')).map((e) => {
    const inner = (e as { elem?: { val?: unknown } }).elem;
    return String(inner ? inner.val : e);
  }));
  const out: string[] = [];
  for (let k = 0; k < n; k++) if (!present.has(benchAddress(k))) out.push(benchAddress(k));
  return out;
}

/**
 * One storm of `n` offenders, each sending limit + 1 notifications (one pass
 * over all of them, then a second: the crossing pass). Returns blocks per
 * second from the first notification until the last offender is in the set.
 */
async function storm(ctx: BenchContext, n: number): Promise<number> {
  const label = `${n.toLocaleString('en-US')} offenders`;
  ctx.log(`storm: ${label} × 2 notifications through rated's HTTP receiver (rule: more than 1 in 10 min blocks)`);
  const ns = await createNamespace('rb-storm');
  try {
    const rated = await startBenchRated({ namespace: ns, scratch: ctx.scratch, cpus: ctx.cpus.server, http: PORT, rules: [STORM_RULE] });
    try {
      const t0 = performance.now();
      const wrk = spawn('ip', ['netns', 'exec', ns.name, ...(ctx.cpus.load !== null ? ['taskset', '-c', ctx.cpus.load] : []),
        'wrk', '-t', '1', '-c', '64', '-d', '900s', '--timeout', '5s', '-s', LUA.storm, `http://127.0.0.1:${PORT}/`], {
        env: { ...process.env, BENCH_ADDRESSES: String(n), BENCH_PASSES: '2' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      wrk.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
      const exited = new Promise<void>((resolve) => wrk.once('close', () => resolve()));
      // 2,000,000 notifications take the receiver a couple of minutes on this machine.
      const bound = setTimeout(() => wrk.kill('SIGKILL'), 180_000 + n * 0.4);
      const sent = await new Promise<number | null>((resolve) => {
        createInterface({ input: wrk.stdout }).on('line', (line) => {
          if (line.trim() === 'done') resolve(performance.now());
        });
        void exited.then(() => resolve(null));
      });
      wrk.kill('SIGINT');
      await exited;
      clearTimeout(bound);
      if (sent === null) throw new Error(`the storm's wrk ended before every notification was answered: ${stderr.trim()}`);

      // Poll rated until nft has accepted an add for every offender (a
      // transaction that returned is in the kernel); a listing afterwards
      // confirms it. Each poll's end is an upper bound.
      let at = 0;
      const deadline = performance.now() + (n > 100_000 ? 120_000 : n >= 100_000 ? 60_000 : 20_000);
      while (performance.now() < deadline) {
        const applied = (await rated.status()).firewall.elements;
        at = performance.now();
        if (applied >= n) break;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const status = await rated.status();
      // Reading 1,000,000 elements back takes nft 1.0.6 80–110 s: there, rated's count of applied adds stands for it.
      const listed = n <= 100_000;
      const inKernel = listed ? await setSize(ns, 'rated', 'v4') : Math.min(n, status.firewall.elements);
      const absent = inKernel >= n || !listed ? [] : await missingFromSet(ns, n);
      const drain = (at - sent) / 1000;
      const total = (at - t0) / 1000;
      const rate = inKernel / total;
      const note = `${(2 * n).toLocaleString('en-US')} notifications sent in ${((sent - t0) / 1000).toFixed(2)} s; `
        + `${inKernel.toLocaleString('en-US')} of ${n.toLocaleString('en-US')} in the set; ${status.firewall.batches} nft batches`
        + `${status.firewall.refused ? `, ${status.firewall.refused} refused` : ''}; rated holds ${status.activeBlocks.toLocaleString('en-US')} blocks`
        + (absent.length > 0 ? `; missing from the set: ${absent.slice(0, 5).join(', ')}${absent.length > 5 ? ', …' : ''}` : '')
        + `; times end when rated's status first counts every add as applied by nft (polled every 10 ms)${listed ? ', then a listing confirms the set' : ''}`;
      ctx.results.add(NAME, {
        name: `storm of ${label}: last notification → all in the kernel`,
        value: inKernel >= n ? drain : null,
        unit: 's',
        target: { of: 'value', op: '<=', bound: n > 100_000 ? 30 : n >= 100_000 ? 5 : 1 },
        note: inKernel >= n ? note : `not all in the kernel in time: ${note}`,
      });
      ctx.results.add(NAME, {
        name: `storm of ${label}: blocks/s, first notification → all in the kernel`,
        value: rate,
        unit: 'blocks/s',
        note: `${total.toFixed(2)} s in all`,
      });
      return rate;
    } finally {
      await rated.stop();
    }
  } finally {
    await ns.delete();
  }
}

interface PerProcess {
  readonly nft: number;
  readonly iptables: number;
  readonly iptablesLoaded: number;
}

/** Runs bench/tools/one-per-address.mjs inside the namespace: COUNT firewall processes, one after the other. */
async function spawnEach(ctx: BenchContext, ns: Namespace, toolName: 'nft' | 'iptables', count: number, first: number): Promise<number> {
  const r = await execa('ip', ['netns', 'exec', ns.name, ...(ctx.cpus.server !== null ? ['taskset', '-c', ctx.cpus.server] : []),
    process.execPath, tool('one-per-address.mjs'), toolName, String(count), String(first)], {
    reject: false, input: '', timeout: 600_000, killSignal: 'SIGKILL',
  });
  if (r.exitCode !== 0) throw new Error(`one-per-address ${toolName} failed (${r.exitCode ?? r.signal ?? 'killed'}): ${r.stderr.trim()}`);
  const out = JSON.parse(r.stdout.trim()) as { count: number; seconds: number; failed: number; error: string };
  if (out.failed > 0) throw new Error(`${out.failed} of ${count} ${toolName} processes failed: ${out.error}`);
  return out.seconds / count;
}

async function onePerAddress(ctx: BenchContext): Promise<PerProcess> {
  const count = ctx.quick ? 200 : 1000;
  const preload = 10_000;
  const ns = await createNamespace('rb-exec');
  try {
    ctx.log(`one process per address: ${count} × nft add element, ${count} × iptables -I, then ${count} more with ${preload.toLocaleString('en-US')} rules in place`);
    await new NftablesBackend(benchRunner(ns), TABLE).ensure();
    const nftEach = await spawnEach(ctx, ns, 'nft', count, 0);
    const iptEach = await spawnEach(ctx, ns, 'iptables', count, 0);
    const rules = ['*filter', ':INPUT ACCEPT [0:0]'];
    for (let k = 0; k < preload; k++) rules.push(`-A INPUT -s ${benchAddress(k)}/32 -j DROP`);
    rules.push('COMMIT', '');
    await mustRun(ns, 'iptables-restore', ['-n'], rules.join('\n'));
    const loadedEach = await spawnEach(ctx, ns, 'iptables', count, count);
    const note = `${count} processes, one after the other, from Node (spawnSync) inside the namespace`;
    ctx.results.add(NAME, { name: 'one `nft add element` process per address', value: nftEach * 1000, unit: 'ms', note: `${Math.round(1 / nftEach)} blocks/s; ${note}` });
    ctx.results.add(NAME, { name: 'one `iptables -I INPUT -s ADDR -j DROP` process per address', value: iptEach * 1000, unit: 'ms', note: `${Math.round(1 / iptEach)} blocks/s; ${note}` });
    ctx.results.add(NAME, {
      name: `the same with ${preload.toLocaleString('en-US')} rules in place`,
      value: loadedEach * 1000,
      unit: 'ms',
      baseline: { name: 'with no rules', value: iptEach * 1000, unit: 'ms' },
      ratio: 'lower',
      note: `${Math.round(1 / loadedEach)} blocks/s`,
    });
    return { nft: 1 / nftEach, iptables: 1 / iptEach, iptablesLoaded: 1 / loadedEach };
  } finally {
    await ns.delete();
  }
}

/** One transaction of `n` elements: rated's backend (JSON) against the same elements as nft text. */
async function bigBatch(ctx: BenchContext, n: number): Promise<void> {
  const label = n.toLocaleString('en-US');
  ctx.log(`one batch of ${label} elements: NftablesBackend add + commit, and \`nft -f -\` text`);
  const ns = await createNamespace('rb-batch');
  try {
    const backend = new NftablesBackend(benchRunner(ns), TABLE);
    await backend.ensure();
    const nets: Network[] = [];
    for (let k = 0; k < n; k++) nets.push(parseNetwork(benchAddress(k)) as Network);
    const texts = nets.map((net) => `${net.text} timeout 600s`);
    const script = `add element inet rated v4 { ${texts.join(', ')} }\n`;
    const flush = (): Promise<unknown> => mustRun(ns, 'nft', ['flush', 'set', 'inet', 'rated', 'v4']);

    // One more block, as a single commit: into the empty set, and into the full one.
    const extra = [parseNetwork('10.200.0.1') as Network, parseNetwork('10.200.0.2') as Network, parseNetwork('10.200.0.3') as Network];
    const single = async (nets: readonly Network[]): Promise<number[]> => {
      const out: number[] = [];
      for (const net of nets) {
        const t = performance.now();
        backend.add(net, 600_000, false);
        const result = await backend.commit();
        out.push((performance.now() - t) / 1000);
        if (result.failed.length > 0) throw new Error(`one more block was refused: ${result.failed[0]?.error}`);
      }
      return out;
    };
    const oneIntoEmpty = await single(extra);
    await flush();

    const times = { text: [] as number[], backend: [] as number[] };
    let oneIntoFull: number[] = [];
    for (let round = 0; round < (ctx.quick ? 1 : 2); round++) {
      let t = performance.now();
      await mustRun(ns, 'nft', ['-f', '-'], script);
      times.text.push((performance.now() - t) / 1000);
      if (await setSize(ns, 'rated', 'v4') !== n) throw new Error('nft -f - did not add every element');
      await flush();

      t = performance.now();
      for (const net of nets) backend.add(net, 600_000, false);
      const result = await backend.commit();
      times.backend.push((performance.now() - t) / 1000);
      if (result.failed.length > 0 || await setSize(ns, 'rated', 'v4') !== n) throw new Error(`the backend did not add every element (${result.failed.length} refused)`);
      if (round === 0) oneIntoFull = await single(extra);
      await flush();
    }
    const best = (xs: number[]): number => Math.min(...xs);
    ctx.results.add(NAME, {
      name: `one batch of ${label} elements via NftablesBackend (add + commit, nft -j -f -)`,
      value: best(times.backend),
      unit: 's',
      baseline: { name: 'the same elements as nft -f - text', value: best(times.text), unit: 's' },
      ratio: 'lower',
      note: `best of ${times.backend.length}; both through \`ip netns exec\``,
    });
    ctx.results.add(NAME, {
      name: `one more block (one commit) with ${label} elements in the set`,
      value: median(oneIntoFull),
      unit: 's',
      baseline: { name: 'into the empty set', value: median(oneIntoEmpty), unit: 's' },
      ratio: 'lower',
      note: `median of ${oneIntoFull.length}; the time until a new offender is dropped, once this many are blocked`,
    });
  } finally {
    await ns.delete();
  }
}
