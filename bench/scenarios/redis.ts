// Redis mode: notifications per second with counters shared through a local
// redis-server against counters in memory. Two daemons built alike (HTTP
// receiver, one rule nobody reaches, dry-run firewall, so only receiving and
// counting are measured) run side by side, one with `redis:` set; the same
// wrk load goes to each in turn. redis-server is started by the scenario in
// the same namespace, on the servers' CPU: it is part of what the web host
// pays for.
import { join } from 'node:path';
import { createNamespace, type Namespace } from '../../test/helpers/netns.js';
import type { BenchContext, Scenario } from '../lib/context.js';
import { interleave, median, spread } from '../lib/interleave.js';
import { spawnProc, type Proc } from '../lib/proc.js';
import { startBenchRated, type BenchRated, type RatedRule } from '../lib/rated.js';
import { startRedisCluster, type RedisCluster } from '../../test/helpers/redis.js';
import { LUA, runWrk, type WrkResult } from '../lib/wrk.js';

const NAME = 'redis';
/** High enough that no client is blocked: the run measures counting, not blocking. */
const RULE: RatedRule = { name: 'bench', limit: 100_000_000, window: '60s', block: '1m' };
const PORT = { memory: 9101, redis: 9102, cluster: 9103, redisServer: 6379 };
const CLUSTER_PORTS = [7301, 7302, 7303];
const MODES = ['memory', 'redis', 'cluster'] as const;
type Mode = (typeof MODES)[number];

export interface RedisBenchOptions {
  /** Distinct client addresses the load rotates over. @default 10000 */
  readonly addresses: number;
  /** wrk's keep-alive connections. @default 64 */
  readonly connections: number;
}

/** One measured load against one of the two daemons. */
export interface RedisSample {
  readonly mode: Mode;
  readonly round: number;
  readonly wrk: WrkResult;
  /** Redis mode: what the daemon's shared counter did during the load (status().redis.counting). */
  readonly shared: { hits: number; batches: number; failed: number; skipped: number } | null;
}

export const redis: Scenario = {
  name: NAME,
  title: 'Redis mode: notifications/s with counters in a local redis-server against memory mode',
  tools: ['ip', 'wrk', 'taskset', 'redis-server', 'redis-cli'],
  root: true,
  run: (ctx) => measureRedis(ctx).then(() => undefined),
};

interface Counting {
  readonly hits: number;
  readonly batches: number;
  readonly failed: number;
  readonly skipped: number;
}

async function counting(rated: BenchRated): Promise<Counting | null> {
  const s = (await rated.status()).redis as { up?: boolean; counting?: Counting } | null | undefined;
  return s?.counting ?? null;
}

/** Starts redis-server without persistence inside the namespace and waits until it is ready. */
async function startRedisServer(ctx: BenchContext, ns: Namespace): Promise<Proc> {
  const proc = spawnProc(['redis-server', '--bind', '127.0.0.1', '--port', String(PORT.redisServer), '--dir', ctx.scratch,
    '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--daemonize', 'no', '--logfile', ''], {
    name: 'redis-server', namespace: ns, cpus: ctx.cpus.server, logFile: join(ctx.scratch, 'redis-server.log'),
  });
  await proc.waitForOutput(/Ready to accept connections/, 15_000);
  return proc;
}

/** Runs `redis-cli` against the scenario's server; returns its output. */
async function redisCli(ns: Namespace, args: readonly string[]): Promise<string> {
  const r = await ns.exec('redis-cli', ['-h', '127.0.0.1', '-p', String(PORT.redisServer), ...args]);
  if (r.exitCode !== 0) throw new Error(`redis-cli ${args.join(' ')} failed (${r.exitCode}): ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/**
 * Measures both modes, adds the result rows and returns every sample;
 * bench/redis.ts runs it on its own with other sizes.
 */
export async function measureRedis(ctx: BenchContext, options: Partial<RedisBenchOptions> = {}): Promise<RedisSample[]> {
  const addresses = options.addresses ?? 10_000;
  const connections = options.connections ?? 64;
  const ns = await createNamespace('rb-redis');
  let server: Proc | null = null;
  let cluster: RedisCluster | null = null;
  const daemons = new Map<Mode, BenchRated>();
  try {
    server = await startRedisServer(ctx, ns);
    cluster = await startRedisCluster({ namespace: ns, host: '127.0.0.1', ports: CLUSTER_PORTS });
    ctx.log(`redis-server on 127.0.0.1:${PORT.redisServer}; rated in memory mode on :${PORT.memory} and with redis: on :${PORT.redis}; `
      + `wrk, ${connections} connections, X-IP rotating over ${addresses.toLocaleString('en-US')} addresses`);
    for (const mode of MODES) {
      daemons.set(mode, await startBenchRated({
        namespace: ns, scratch: ctx.scratch, cpus: ctx.cpus.server, http: PORT[mode], rules: [RULE], args: ['--dry-run'],
        config: mode === 'redis' ? { redis: { url: `redis://127.0.0.1:${PORT.redisServer}/0`, prefix: 'bench:' } }
          : mode === 'cluster' ? { redis: { cluster: CLUSTER_PORTS.map((p) => `redis://127.0.0.1:${p}`), prefix: 'bench:' } } : {},
      }));
    }
    const redisDaemon = daemons.get('redis') as BenchRated;
    const clusterDaemon = daemons.get('cluster') as BenchRated;
    if ((await redisDaemon.status()).redis === null) throw new Error('the daemon started with redis: reports no Redis state (status().redis is null)');
    const shares = (mode: Mode): BenchRated | null => (mode === 'redis' ? redisDaemon : mode === 'cluster' ? clusterDaemon : null);
    const load = (mode: Mode, seconds: number): Promise<WrkResult> => runWrk({
      namespace: ns, url: `http://127.0.0.1:${PORT[mode]}/`, script: LUA.rotate, cpus: ctx.cpus.load, seconds, connections,
      env: { BENCH_HEADER: 'X-IP', BENCH_ADDRESSES: String(addresses) },
    });
    // Warm-up: JIT, connections, and the counters' first keys in Redis.
    for (const mode of MODES) await load(mode, ctx.warmupSeconds);
    const samples: RedisSample[] = [];
    await interleave(MODES, ctx.rounds, async (key, round) => {
      const mode = key as Mode;
      const daemon = shares(mode);
      const before = daemon ? await counting(daemon) : null;
      const wrk = await load(mode, ctx.seconds);
      const after = daemon ? await counting(daemon) : null;
      const shared = before && after ? {
        hits: after.hits - before.hits,
        batches: after.batches - before.batches,
        failed: after.failed - before.failed,
        skipped: after.skipped - before.skipped,
      } : null;
      const sample: RedisSample = { mode, round: round + 1, wrk, shared };
      samples.push(sample);
      ctx.log(`${mode.padEnd(6)} round ${round + 1}: ${Math.round(wrk.rps).toLocaleString('en-US')} notifications/s`
        + (shared ? `; ${Math.round(shared.hits / wrk.seconds).toLocaleString('en-US')} hits/s to Redis in ${shared.batches} batches, `
          + `${shared.skipped} counted locally only, ${shared.failed} failed batches` : ''));
      return sample;
    });
    const keys = Number(await redisCli(ns, ['DBSIZE']));
    const redisUp = (await redisDaemon.status()).redis as { up?: boolean } | null;

    const of = (mode: Mode): RedisSample[] => samples.filter((s) => s.mode === mode);
    const rps = (mode: Mode): number => median(of(mode).map((s) => s.wrk.rps));
    const p99 = (mode: Mode): string => `${median(of(mode).map((s) => s.wrk.latencyP99Ms ?? NaN)).toFixed(2)} ms`;
    const total = (f: 'hits' | 'batches' | 'failed' | 'skipped'): number => of('redis').reduce((n, s) => n + (s.shared?.[f] ?? 0), 0);
    const answered = of('redis').reduce((n, s) => n + s.wrk.requests, 0);
    const non2xx = samples.reduce((n, s) => n + s.wrk.non2xx, 0);
    const notes = [
      `shared in Redis: ${total('hits').toLocaleString('en-US')} hits of ${answered.toLocaleString('en-US')} answered notifications in ${total('batches').toLocaleString('en-US')} batches, `
        + `${total('skipped').toLocaleString('en-US')} counted locally only, ${total('failed')} failed batches; ${keys.toLocaleString('en-US')} keys in Redis; Redis ${redisUp?.up ? 'up' : 'DOWN'} at the end`,
      `p99 latency ${p99('redis')} (memory mode ${p99('memory')})`,
      spread(of('redis').map((s) => s.wrk.rps)) && `redis ${spread(of('redis').map((s) => s.wrk.rps))}, memory ${spread(of('memory').map((s) => s.wrk.rps))}`,
      non2xx > 0 ? `${non2xx} answers were not 2xx` : '',
      'redis-server on the servers\' CPU',
    ].filter(Boolean);
    ctx.results.add(NAME, {
      name: 'HTTP receiver with counters in Redis, notifications/s',
      value: rps('redis'),
      unit: '/s',
      baseline: { name: 'counters in memory', value: rps('memory'), unit: '/s' },
      ratio: 'higher',
      target: { of: 'ratio', op: '>=', bound: 0.5 },
      note: notes.join('; '),
    });
    const clusterUp = (await clusterDaemon.status()).redis as { up?: boolean } | null;
    const clusterShared = of('cluster').reduce((n, s) => n + (s.shared?.hits ?? 0), 0);
    const clusterSkipped = of('cluster').reduce((n, s) => n + (s.shared?.skipped ?? 0), 0);
    ctx.results.add(NAME, {
      name: 'HTTP receiver with counters in a Redis Cluster (3 masters, this machine), notifications/s',
      value: rps('cluster'),
      unit: '/s',
      baseline: { name: 'counters in memory', value: rps('memory'), unit: '/s' },
      ratio: 'higher',
      target: { of: 'ratio', op: '>=', bound: 0.6 },
      note: `shared in the Cluster: ${clusterShared.toLocaleString('en-US')} hits, ${clusterSkipped.toLocaleString('en-US')} counted locally only; `
        + `Cluster ${clusterUp?.up ? 'up' : 'DOWN'} at the end; p99 latency ${p99('cluster')}; the Cluster's servers on the same machine`,
    });
    return samples;
  } finally {
    for (const d of daemons.values()) await d.stop();
    await server?.stop();
    await cluster?.stop();
    await ns.delete();
  }
}
