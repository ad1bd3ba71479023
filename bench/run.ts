// The benchmark suite: each scenario measures rated and its baseline in the
// same run and reports the ratio, since absolute figures drift from machine
// to machine and from run to run.
//
// Usage: npm run bench -- [SCENARIO…] [--quick] [--seconds N] [--rounds N] [--out FILE] [--no-build] [--no-pin] [--list]
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { arch, availableParallelism, cpus, hostname, loadavg, release, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { missingPrereqs } from '../test/helpers/prereq.js';
import type { BenchContext, Scenario } from './lib/context.js';
import { killAllStarted } from './lib/proc.js';
import { ROOT } from './lib/rated.js';
import { markdownTable, Results, textTable, type Outcome } from './lib/results.js';
import { blockLatency } from './scenarios/block-latency.js';
import { cli } from './scenarios/cli.js';
import { blockScaling } from './scenarios/block-scaling.js';
import { blockSpeed } from './scenarios/block-speed.js';
import { ingest } from './scenarios/ingest.js';
import { memory } from './scenarios/memory.js';
import { moving } from './scenarios/moving.js';
import { redis } from './scenarios/redis.js';
import { replay } from './scenarios/replay.js';
import { restart } from './scenarios/restart.js';
import { scale } from './scenarios/scale.js';
import { webCost } from './scenarios/web-cost.js';

const SCENARIOS: readonly Scenario[] = [ingest, webCost, blockSpeed, blockLatency, blockScaling, scale, replay, restart, memory, redis, cli, moving];

const USAGE = `usage: npm run bench -- [SCENARIO…] [options]

scenarios (all when none is named):
${SCENARIOS.map((s) => `  ${s.name.padEnd(14)} ${s.title}`).join('\n')}

options:
  --quick        one round of shorter loads, smaller sizes
  --seconds N    length of each measured load (default 5, 3 with --quick)
  --rounds N     measure each load N times, alternating with its baseline; figures are medians (default 3, 1 with --quick)
  --out FILE     result file (default bench/results/latest.json; a .md table is written next to it)
  --no-build     use dist/ as it is instead of building first
  --no-pin       let the scheduler place servers and load generators (default: servers on CPU 0, load on CPU 1)
  --list         list the scenarios and exit
`;

function fail(message: string): never {
  process.stderr.write(`bench: ${message}\n\n${USAGE}`);
  process.exit(2);
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        quick: { type: 'boolean', default: false },
        seconds: { type: 'string' },
        rounds: { type: 'string' },
        out: { type: 'string' },
        'no-build': { type: 'boolean', default: false },
        'no-pin': { type: 'boolean', default: false },
        list: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    fail((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help || values.list) {
    process.stdout.write(values.help ? USAGE : `${SCENARIOS.map((s) => `${s.name}\t${s.title}`).join('\n')}\n`);
    return 0;
  }
  for (const name of positionals) {
    if (!SCENARIOS.some((s) => s.name === name)) fail(`unknown scenario ${JSON.stringify(name)}`);
  }
  const selected = positionals.length > 0 ? SCENARIOS.filter((s) => positionals.includes(s.name)) : SCENARIOS;
  const quick = values.quick;
  const seconds = values.seconds === undefined ? (quick ? 3 : 5) : Number(values.seconds);
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 120) fail(`--seconds: expected a whole number from 1 to 120, got ${JSON.stringify(values.seconds)}`);
  const rounds = values.rounds === undefined ? (quick ? 1 : 3) : Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) fail(`--rounds: expected a whole number from 1 to 20, got ${JSON.stringify(values.rounds)}`);
  const out = resolve(values.out ?? join(ROOT, 'bench', 'results', 'latest.json'));

  // Started processes are killed if the run itself is interrupted; the
  // namespace helper deletes the namespaces on exit.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      killAllStarted();
      process.exit(130);
    });
  }
  process.on('exit', killAllStarted);

  const build = values['no-build'] ? 'not built (--no-build)' : buildDist();
  if (!existsSync(join(ROOT, 'dist', 'cli', 'main.js'))) {
    process.stderr.write('bench: dist/cli/main.js is missing and the build failed; run npm run build\n');
    return 1;
  }

  const pin = !values['no-pin'] && availableParallelism() >= 2;
  const machine = describeMachine();
  const results = new Results();
  const scratch = mkdtempSync(join(tmpdir(), 'rated-bench-'));
  // nginx's workers run as nobody and must reach their html/ below it.
  chmodSync(scratch, 0o755);
  process.on('exit', () => rmSync(scratch, { recursive: true, force: true }));
  const ctx: BenchContext = {
    quick,
    seconds,
    rounds,
    warmupSeconds: quick ? 1 : 2,
    cpus: pin ? { server: '0', load: '1' } : { server: null, load: null },
    scratch,
    results,
    log: (line) => process.stdout.write(`  ${line}\n`),
  };
  process.stdout.write(`rated benchmark: ${selected.map((s) => s.name).join(', ')}${quick ? ' (quick)' : ''}; ${rounds} × ${seconds} s per load; `
    + `${pin ? 'servers on CPU 0, load generators on CPU 1' : 'no CPU pinning'}\n${machine.summary}\nbuild: ${build}\n`);

  const started = performance.now();
  const loadBefore = loadavg()[0] ?? 0;
  if (loadBefore > 0.5) process.stdout.write(`note: load average ${loadBefore.toFixed(2)} before the run: something else is busy, figures will scatter more\n`);
  try {
    for (const scenario of selected) {
      process.stdout.write(`\n== ${scenario.name}: ${scenario.title}\n`);
      const t0 = performance.now();
      const missing = missingPrereqs(scenario.tools, scenario.root);
      let outcome: Outcome;
      if (missing.length > 0) {
        const why = `needs ${missing.join(', ')}`;
        process.stdout.write(`  skipped: ${why}\n`);
        outcome = { scenario: scenario.name, status: 'skipped', seconds: 0, why };
      } else {
        try {
          await scenario.run(ctx);
          outcome = { scenario: scenario.name, status: 'done', seconds: (performance.now() - t0) / 1000, why: null };
        } catch (err) {
          const why = err instanceof Error ? err.message : String(err);
          process.stdout.write(`  FAILED: ${why}\n`);
          outcome = { scenario: scenario.name, status: 'failed', seconds: (performance.now() - t0) / 1000, why };
        } finally {
          killAllStarted();
        }
      }
      results.outcomes.push(outcome);
      process.stdout.write(`  (${outcome.seconds.toFixed(1)} s)\n`);
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  const totalSeconds = (performance.now() - started) / 1000;
  const loadAfter = loadavg()[0] ?? 0;

  process.stdout.write(`\n${textTable(results.rows)}\n`);
  for (const o of results.outcomes) if (o.status !== 'done') process.stdout.write(`${o.scenario}: ${o.status}: ${o.why}\n`);

  const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  const report = {
    date: new Date().toISOString(),
    command,
    seconds,
    rounds,
    quick,
    pinned: pin,
    build,
    totalSeconds,
    loadAverage: { before: loadBefore, after: loadAfter },
    machine: machine.details,
    outcomes: results.outcomes,
    rows: results.rows,
  };
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
  const md = out.replace(/\.json$/, '') + '.md';
  writeFileSync(md, `Measured with \`${command}\` on ${report.date.slice(0, 10)}: ${machine.summary}; `
    + `${pin ? 'servers on CPU 0, load generators on CPU 1' : 'no CPU pinning'}; ${rounds} × ${seconds} s per load, medians; `
    + `load average ${loadBefore.toFixed(1)} before, ${loadAfter.toFixed(1)} after.\n\n${markdownTable(results.rows)}\n`);
  process.stdout.write(`\nresults: ${out}\n         ${md}\n(${totalSeconds.toFixed(0)} s in all)\n`);
  return results.outcomes.some((o) => o.status === 'failed') ? 1 : 0;
}

/** Builds dist/ like the test runner does; a failed build leaves the previous dist/ in use, and says so. */
function buildDist(): string {
  process.stdout.write('building dist/ (tsc -p tsconfig.json)…\n');
  const r = spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: ROOT, encoding: 'utf8' });
  if (r.status === 0) return 'fresh (tsc -p tsconfig.json)';
  process.stdout.write(`  build failed; measuring the previous dist/:\n${(r.stdout + r.stderr).split('\n').slice(0, 10).map((l) => `    ${l}`).join('\n')}\n`);
  return 'previous dist/ (tsc failed)';
}

/** The machine and tool versions, for the report. */
function describeMachine(): { summary: string; details: Record<string, unknown> } {
  const version = (cmd: string, args: string[]): string | null => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    if (r.status !== 0 && !r.stderr) return null;
    return (r.stdout + r.stderr).split('\n').find((l) => l.trim() !== '')?.trim() ?? null;
  };
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const git = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' });
  const dirty = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' });
  const details = {
    hostname: hostname(),
    cpu,
    cpus: availableParallelism(),
    arch: arch(),
    memoryGB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version,
    nginx: version('nginx', ['-v']),
    nft: version('nft', ['--version']),
    iptables: version('iptables', ['--version']),
    wrk: version('wrk', ['--version'])?.split(' ').slice(0, 2).join(' ') ?? null,
    commit: git.status === 0 ? `${git.stdout.trim()}${dirty.stdout.trim() ? ' (with uncommitted changes)' : ''}` : null,
  };
  const summary = `${details.cpus} × ${cpu}, ${details.memoryGB} GB, Linux ${details.kernel}, Node ${details.node}, ${details.nginx ?? 'no nginx'}, ${details.nft ?? 'no nft'}`;
  return { summary, details };
}

process.exitCode = await main();
