// Moving in, at scale. `rated import` of 100,000 blocklist entries through
// the daemon, whole process, against the floor: the same 100,000 elements as
// one `nft -f -` transaction; the same import with a hook that sleeps 1 s on
// every block, against the import without hooks (blocking must not slow
// down); and `rated migrate iptables` of 20,000 of the 2014 tool's rules
// against one `iptables-restore --noflush` that only removes them.
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { execa } from 'execa';
import { createNamespace, type Namespace } from '../../test/helpers/netns.js';
import { benchAddress, mustRun, type BenchContext, type Scenario } from '../lib/context.js';
import { median } from '../lib/interleave.js';
import { BIN, ROOT, startBenchRated } from '../lib/rated.js';

const NAME = 'moving';
const RULES = [{ name: 'flood', limit: 100, window: '60s', block: '1h' }];

export const moving: Scenario = {
  name: NAME,
  title: 'Moving in: rated import (100,000 entries, with and without a slow hook), rated migrate iptables (20,000 rules)',
  tools: ['ip', 'nft', 'iptables-restore', 'iptables-save'],
  root: true,
  async run(ctx) {
    const entries = ctx.quick ? 20_000 : 100_000;
    const list = join(ctx.scratch, 'import.txt');
    writeFileSync(list, `${Array.from({ length: entries }, (_, k) => benchAddress(k)).join('\n')}\n`);
    const slow = join(ctx.scratch, 'slow-hook');
    writeFileSync(slow, '#!/bin/sh\nsleep 1\n');
    chmodSync(slow, 0o755);
    // Rounds alternate subject and baselines; the figures are medians.
    const floors: number[] = [];
    const plains: number[] = [];
    const hookeds: number[] = [];
    for (let r = 0; r < ctx.rounds; r++) {
      floors.push(await nftFloor(ctx, entries));
      plains.push(await importOnce(ctx, list, null));
      hookeds.push(await importOnce(ctx, list, slow));
    }
    const [floor, plain, hooked] = [median(floors), median(plains), median(hookeds)];
    ctx.results.add(NAME, {
      name: `rated import of ${entries.toLocaleString('en')} list entries through the daemon (whole command)`,
      value: plain / 1000, unit: 's',
      baseline: { name: 'the same elements as one nft -f transaction', value: floor / 1000, unit: 's' },
      ratio: 'lower',
      target: { of: 'value', op: '<=', bound: 5 },
    });
    ctx.results.add(NAME, {
      name: `the same import with a hook that sleeps 1 s on every block (queue 10,000, concurrency 4)`,
      value: hooked / 1000, unit: 's',
      baseline: { name: 'without hooks', value: plain / 1000, unit: 's' },
      ratio: 'lower',
      note: 'blocking never waits for a hook: a ratio near 1',
    });
    const rules = ctx.quick ? 5000 : 20_000;
    const runs: Array<{ migrate: number; floor: number }> = [];
    for (let r = 0; r < ctx.rounds; r++) runs.push(await migrateOnce(ctx, rules));
    const m = { migrate: median(runs.map((x) => x.migrate)), floor: median(runs.map((x) => x.floor)) };
    ctx.results.add(NAME, {
      name: `rated migrate iptables of ${rules.toLocaleString('en')} rules (${(rules / 2).toLocaleString('en')} addresses, whole command)`,
      value: m.migrate / 1000, unit: 's',
      baseline: { name: 'iptables-restore --noflush removing the same rules', value: m.floor / 1000, unit: 's' },
      ratio: 'lower',
      target: { of: 'value', op: '<=', bound: 10 },
    });
  },
};

async function withNamespace<T>(prefix: string, f: (ns: Namespace) => Promise<T>): Promise<T> {
  const ns = await createNamespace(prefix);
  try {
    return await f(ns);
  } finally {
    await ns.delete();
  }
}

/** One `nft -f -` adding the elements to a set like rated's. */
async function nftFloor(ctx: BenchContext, n: number): Promise<number> {
  return withNamespace('rtd-bmvf', async (ns) => {
    await mustRun(ns, 'nft', ['-f', '-'], 'table inet floor {\n  set v4 { type ipv4_addr; flags timeout; size 1048576; }\n}\n');
    const script = `add element inet floor v4 { ${Array.from({ length: n }, (_, k) => `${benchAddress(k)} timeout 3600s`).join(', ')} }\n`;
    const t0 = performance.now();
    await mustRun(ns, 'nft', ['-f', '-'], script);
    const ms = performance.now() - t0;
    ctx.log(`nft -f with ${n} elements: ${Math.round(ms)} ms`);
    return ms;
  });
}

/** `rated import` of the list into a fresh daemon; the hook, when given, on every block. */
async function importOnce(ctx: BenchContext, list: string, hook: string | null): Promise<number> {
  return withNamespace('rtd-bmvi', async (ns) => {
    const rated = await startBenchRated({
      namespace: ns, scratch: ctx.scratch, cpus: ctx.cpus.server, http: null, udp: null, rules: RULES,
      config: hook === null ? {} : { hooks: { block: [hook] } },
    });
    try {
      const t0 = performance.now();
      const r = await execa('ip', ['netns', 'exec', ns.name, process.execPath, BIN, 'import', list, '--socket', rated.socket, '--for', '1h'], { cwd: ROOT, reject: false, timeout: 300_000 });
      const ms = performance.now() - t0;
      if (r.exitCode !== 0) throw new Error(`rated import failed: ${r.stderr}`);
      ctx.log(`rated import${hook === null ? '' : ' with a 1 s hook'}: ${Math.round(ms)} ms; ${r.stdout.split('\n')[1] ?? ''}`);
      return ms;
    } finally {
      await rated.proc.stop();
    }
  });
}

/** The 2014 tool's rules for n/2 addresses, then `rated migrate iptables`; the floor removes the same rules with iptables-restore alone. */
async function migrateOnce(ctx: BenchContext, rules: number): Promise<{ migrate: number; floor: number }> {
  const addresses = Array.from({ length: rules / 2 }, (_, k) => benchAddress(k));
  const add = `*filter\n${addresses.map((a) => `-A INPUT -s ${a}/32 -j DROP\n-A OUTPUT -d ${a}/32 -j REJECT --reject-with icmp-port-unreachable`).join('\n')}\nCOMMIT\n`;
  const remove = add.replace(/^-A /gm, '-D ');
  const floor = await withNamespace('rtd-bmvr', async (ns) => {
    await mustRun(ns, 'iptables-restore', ['--noflush'], add);
    const t0 = performance.now();
    await mustRun(ns, 'iptables-restore', ['--noflush'], remove);
    return performance.now() - t0;
  });
  const migrate = await withNamespace('rtd-bmvm', async (ns) => {
    await mustRun(ns, 'iptables-restore', ['--noflush'], add);
    const rated = await startBenchRated({ namespace: ns, scratch: ctx.scratch, cpus: ctx.cpus.server, http: null, udp: null, rules: RULES });
    try {
      const t0 = performance.now();
      const r = await execa('ip', ['netns', 'exec', ns.name, process.execPath, BIN, 'migrate', 'iptables', '--yes', '--socket', rated.socket], { cwd: ROOT, reject: false, timeout: 300_000 });
      const ms = performance.now() - t0;
      if (r.exitCode !== 0) throw new Error(`rated migrate failed: ${r.stderr}`);
      const left = (await mustRun(ns, 'iptables-save', ['-t', 'filter'])).stdout.split('\n').filter((l) => l.startsWith('-A ')).length;
      if (left !== 0) throw new Error(`${left} rules left after the migration`);
      ctx.log(`rated migrate iptables, ${rules} rules: ${Math.round(ms)} ms; ${r.stdout.split('\n')[0] ?? ''}`);
      return ms;
    } finally {
      await rated.proc.stop();
    }
  });
  return { migrate, floor };
}
