// Notifications per second with counters in memory against counters in
// Redis, measured in one run on this machine: the same daemon (dry-run
// firewall, so only receiving and counting are measured), the same load (wrk,
// keep-alive, X-IP rotating over many addresses), alternating the two modes.
// Everything runs in a network namespace this script creates and deletes.
//
//   node --import tsx bench/redis.ts [--seconds 10] [--rounds 2] [--addresses 10000] [--connections 32] [--json]
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { createNamespace, type Namespace } from '../test/helpers/netns.js';
import { startRated, type Rated } from '../test/helpers/rated.js';
import { startRedis, type RedisServer } from '../test/helpers/redis.js';

const { values: opts } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '2' },
    addresses: { type: 'string', default: '10000' },
    connections: { type: 'string', default: '32' },
    json: { type: 'boolean', default: false },
  },
});
const SECONDS = Number(opts.seconds);
const ROUNDS = Number(opts.rounds);
const ADDRESSES = Number(opts.addresses);
const CONNECTIONS = Number(opts.connections);

const LUA = `
local count = ${ADDRESSES}
local requests = {}
local i = 0
function init(args)
  for k = 0, count - 1 do
    local ip = string.format("198.%d.%d.%d", 18 + math.floor(k / 65536), math.floor(k / 256) % 256, k % 256)
    requests[k + 1] = wrk.format("GET", "/", { ["X-IP"] = ip })
  end
  i = math.random(0, count - 1)
end
function request()
  i = i + 1
  if i > count then i = 1 end
  return requests[i]
end
`;

interface Sample {
  mode: 'memory' | 'redis';
  round: number;
  /** Notifications answered per second, as wrk counts them. */
  rps: number;
  requests: number;
  non2xx: number;
  latencyAvgMs: number | null;
  /** In Redis mode: hits the daemon sent to Redis, and what it could not send. */
  sharedHits: number | null;
  skipped: number | null;
  failedBatches: number | null;
  batches: number | null;
}

async function wrk(ns: Namespace, script: string, seconds: number): Promise<{ rps: number; requests: number; non2xx: number; latencyAvgMs: number | null }> {
  const r = await execa('ip', ['netns', 'exec', ns.name, 'wrk', '-t', '1', '-c', String(CONNECTIONS), '-d', `${seconds}s`,
    '--timeout', '5s', '-s', script, 'http://127.0.0.1:8080/'], { reject: false, input: '', timeout: (seconds + 30) * 1000 });
  if (r.exitCode !== 0) throw new Error(`wrk failed: ${r.stderr || r.stdout}`);
  const out = r.stdout;
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const total = /(\d+) requests in/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const lat = /Latency\s+([\d.]+)(us|ms|s)/.exec(out);
  if (!rps || !total) throw new Error(`cannot read wrk's report:\n${out}`);
  const scale = { us: 1e-3, ms: 1, s: 1000 } as const;
  return {
    rps: Number(rps[1]),
    requests: Number(total[1]),
    non2xx: non2xx ? Number(non2xx[1]) : 0,
    latencyAvgMs: lat ? Number(lat[1]) * scale[lat[2] as keyof typeof scale] : null,
  };
}

async function redisStats(rated: Rated): Promise<{ hits: number; skipped: number; failed: number; batches: number } | null> {
  const r = await rated.cli(['status', '--json']);
  const s = JSON.parse(r.stdout) as { redis: { counting: { hits: number; skipped: number; failed: number; batches: number } } | null };
  return s.redis ? s.redis.counting : null;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root: the benchmark uses a network namespace');
  const dir = mkdtempSync(join(tmpdir(), 'rated-bench-redis-'));
  const script = join(dir, 'rotate.lua');
  writeFileSync(script, LUA);
  const ns = await createNamespace('rbench');
  let redis: RedisServer | null = null;
  let rated: Rated | null = null;
  const samples: Sample[] = [];
  try {
    redis = await startRedis({ namespace: ns, host: '127.0.0.1', port: 6379 });
    for (let round = 1; round <= ROUNDS; round++) {
      for (const mode of ['memory', 'redis'] as const) {
        const home = join(dir, `${mode}-${round}`);
        const config = join(`${home}.yml`);
        writeFileSync(config, [
          'receivers: { http: { address: 127.0.0.1, port: 8080 }, udp: null }',
          // Nobody goes over the limit: the run measures counting, not blocking.
          'rules: [{ name: bench, limit: 100000000, window: 60s, block: 1m }]',
          'firewall: { backend: dry-run }',
          `control: { socket: ${home}.sock }`,
          `state: { dir: ${home}-state }`,
          `redis: ${mode === 'redis' ? `{ url: "redis://127.0.0.1:6379/0", prefix: "bench${round}:" }` : 'null'}`,
          'log: { level: info }',
          '',
        ].join('\n'));
        rated = await startRated({ namespace: ns, config, socket: `${home}.sock` });
        await wrk(ns, script, 2); // warm-up: JIT, connections, the counters' first keys
        const before = await redisStats(rated);
        const w = await wrk(ns, script, SECONDS);
        const after = await redisStats(rated);
        samples.push({
          mode, round, ...w,
          sharedHits: after && before ? after.hits - before.hits : null,
          skipped: after && before ? after.skipped - before.skipped : null,
          failedBatches: after && before ? after.failed - before.failed : null,
          batches: after && before ? after.batches - before.batches : null,
        });
        await rated.stop();
        rated = null;
        if (!opts.json) {
          const s = samples[samples.length - 1] as Sample;
          console.log(`${mode.padEnd(6)} round ${round}: ${Math.round(s.rps)} notifications/s` +
            (s.sharedHits !== null ? `, ${Math.round(s.sharedHits / SECONDS)} hits/s to Redis in ${s.batches} batches, ${s.skipped} local only, ${s.failedBatches} failed batches` : ''));
        }
      }
    }
  } finally {
    await rated?.stop();
    await redis?.stop();
    await ns.delete();
    rmSync(dir, { recursive: true, force: true });
  }
  const median = (xs: number[]): number => {
    const s = [...xs].sort((a, b) => a - b);
    const m = Math.floor(s.length / 2);
    return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
  };
  const memory = median(samples.filter((s) => s.mode === 'memory').map((s) => s.rps));
  const redisRps = median(samples.filter((s) => s.mode === 'redis').map((s) => s.rps));
  const summary = {
    seconds: SECONDS, rounds: ROUNDS, addresses: ADDRESSES, connections: CONNECTIONS,
    memoryRps: Math.round(memory), redisRps: Math.round(redisRps), ratio: Number((redisRps / memory).toFixed(2)), samples,
  };
  if (opts.json) console.log(JSON.stringify(summary, null, 2));
  else console.log(`median: memory ${summary.memoryRps}/s, redis ${summary.redisRps}/s (${Math.round(summary.ratio * 100)}% of memory)`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
