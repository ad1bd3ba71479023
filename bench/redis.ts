// The Redis scenario of the benchmark suite (bench/scenarios/redis.ts) on
// its own, with its sizes as options: notifications per second with counters
// in Redis against counters in memory, same daemon, same wrk load,
// alternating rounds. `npm run bench -- redis` runs the same measurement
// within the suite.
//
//   node --import tsx bench/redis.ts [--seconds 10] [--rounds 2] [--addresses 10000] [--connections 64] [--json]
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { missingPrereqs } from '../test/helpers/prereq.js';
import type { BenchContext } from './lib/context.js';
import { killAllStarted } from './lib/proc.js';
import { Results, textTable } from './lib/results.js';
import { measureRedis, redis } from './scenarios/redis.js';

const { values: opts } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '2' },
    addresses: { type: 'string', default: '10000' },
    connections: { type: 'string', default: '64' },
    json: { type: 'boolean', default: false },
  },
});

function wholeNumber(name: string, text: string, max: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > max) {
    process.stderr.write(`bench/redis.ts: --${name}: expected a whole number from 1 to ${max}, got ${JSON.stringify(text)}\n`);
    process.exit(2);
  }
  return n;
}

async function main(): Promise<number> {
  const missing = missingPrereqs(redis.tools, redis.root);
  if (missing.length > 0) {
    process.stderr.write(`bench/redis.ts: needs ${missing.join(', ')}\n`);
    return 1;
  }
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      killAllStarted();
      process.exit(130);
    });
  }
  process.on('exit', killAllStarted);
  const scratch = mkdtempSync(join(tmpdir(), 'rated-bench-redis-'));
  chmodSync(scratch, 0o755);
  const pin = availableParallelism() >= 2;
  // With --json, stdout holds the JSON document only; progress goes to stderr.
  const results = new Results((line) => (opts.json ? process.stderr : process.stdout).write(line));
  const ctx: BenchContext = {
    quick: false,
    seconds: wholeNumber('seconds', opts.seconds, 120),
    rounds: wholeNumber('rounds', opts.rounds, 20),
    warmupSeconds: 2,
    cpus: pin ? { server: '0', load: '1' } : { server: null, load: null },
    scratch,
    results,
    log: (line) => (opts.json ? process.stderr : process.stdout).write(`  ${line}\n`),
  };
  try {
    const samples = await measureRedis(ctx, {
      addresses: wholeNumber('addresses', opts.addresses, 1_000_000),
      connections: wholeNumber('connections', opts.connections, 10_000),
    });
    if (opts.json) process.stdout.write(`${JSON.stringify({ rows: results.rows, samples: samples.map(({ wrk, ...s }) => ({ ...s, rps: wrk.rps, requests: wrk.requests, non2xx: wrk.non2xx, latencyP99Ms: wrk.latencyP99Ms })) }, null, 2)}\n`);
    else process.stdout.write(`\n${textTable(results.rows)}\n`);
    return 0;
  } finally {
    killAllStarted();
    rmSync(scratch, { recursive: true, force: true });
  }
}

main().then((code) => {
  process.exitCode = code;
}, (err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
