// Block latency: how long a single offender keeps getting through after the
// notification that puts it over its limit, while the receiver is busy.
// The real daemon runs with its nftables backend in a namespace; wrk keeps
// its HTTP receiver saturated with notifications nobody is blocked for
// (10,000 rotating addresses, a rule with a limit nobody reaches), and every
// 150 ms one new address crosses a `limit: 1` rule that only /login matches.
// "In the kernel" is the kernel's own event for the new element, read from
// `nft monitor` inside the namespace; the delay is taken from the moment the
// crossing notification is sent. The baseline is the same, with the
// receiver idle, in the same run.
import { readFileSync } from 'node:fs';
import { execa } from 'execa';
import { callApi } from '../../src/control/client.js';
import { createNamespace, type Namespace } from '../../test/helpers/netns.js';
import { tool, type BenchContext, type Scenario } from '../lib/context.js';
import { interleave } from '../lib/interleave.js';
import { startBenchRated, type BenchRated, type RatedRule } from '../lib/rated.js';
import { LUA, runWrk, type WrkResult } from '../lib/wrk.js';

const NAME = 'block-latency';
const PORT = 9101;
const TABLE = 'rated';
const PATH = '/login';
const RULES: readonly RatedRule[] = [
  // Counts the background load; nobody reaches it.
  { name: 'bench', limit: 100_000_000, window: '60s', block: '1m' },
  // The second notification for /login within 10 minutes blocks.
  { name: 'login', limit: 1, window: '10m', block: '10m', match: { path: PATH } },
];
const INTERVAL_MS = 150;
/** wrk runs this long before the first offender, so that they all meet a receiver under load. */
const LEAD_SECONDS = 1;
const TARGET_MS = 100;

export const blockLatency: Scenario = {
  name: NAME,
  title: 'Block latency: single offenders, crossing notification → in the kernel, receiver under load',
  tools: ['ip', 'nft', 'wrk', 'taskset', 'nice'],
  root: true,
  async run(ctx) {
    const totals = { idle: ctx.quick ? 50 : 100, loaded: ctx.quick ? 60 : 200 };
    const ns = await createNamespace('rb-blat');
    try {
      const rated = await startBenchRated({ namespace: ns, scratch: ctx.scratch, cpus: ctx.cpus.server, http: PORT, rules: RULES, table: TABLE });
      try {
        const backend = (await rated.status()).backend;
        if (backend !== 'nftables') throw new Error(`rated chose the ${String(backend)} backend; this scenario measures nftables`);
        await measure(ctx, ns, rated, totals);
      } finally {
        await rated.stop();
      }
    } finally {
      await ns.delete();
    }
  },
};

/** One offender: wall-clock ms (with fractions) of its crossing notification, its answer, and the kernel's event. */
interface Sample {
  readonly ip: string;
  readonly sent: number;
  readonly answered: number;
  readonly kernel: number | null;
}

interface Run {
  readonly samples: Sample[];
  readonly background: WrkResult | null;
  /** The daemon's firewall batches during the run: how many, and how many took longer than 100 ms. */
  readonly batches: { readonly all: number; readonly slow: number };
}

/** `rated_firewall_batch_seconds` from GET /metrics: batches in all, and batches within 100 ms. */
async function batchCounts(rated: BenchRated): Promise<{ all: number; fast: number }> {
  const r = await callApi(rated.socket, 'GET', '/metrics', undefined, 10_000);
  const value = (re: RegExp): number => Number(re.exec(r.text)?.[1] ?? NaN);
  return {
    all: value(/^rated_firewall_batch_seconds_count(?:\{\})? (\d+)/m),
    fast: value(/^rated_firewall_batch_seconds_bucket\{le="0\.1"\} (\d+)/m),
  };
}

/** Runs bench/tools/offenders.mjs in the namespace for `count` offenders numbered from `first`. */
async function offenders(ctx: BenchContext, ns: Namespace, first: number, count: number): Promise<Sample[]> {
  const seconds = 30 + Math.ceil((count * INTERVAL_MS) / 1000);
  // At nice -10 (it and its nft monitor), so that the instrument's own wake-ups do not wait behind wrk on the same CPU.
  const r = await execa('ip', ['netns', 'exec', ns.name, ...(ctx.cpus.load !== null ? ['taskset', '-c', ctx.cpus.load] : []),
    'nice', '-n', '-10', process.execPath, tool('offenders.mjs'), String(PORT), TABLE, PATH, String(first), String(count), String(INTERVAL_MS)], {
    reject: false, input: '', timeout: seconds * 1000, killSignal: 'SIGKILL',
  });
  if (r.exitCode !== 0) throw new Error(`offenders.mjs failed (${r.exitCode ?? r.signal ?? 'killed'}): ${r.stderr.trim() || r.stdout.trim()}`);
  return (JSON.parse(r.stdout.trim()) as { samples: Sample[] }).samples;
}

async function measure(ctx: BenchContext, ns: Namespace, rated: BenchRated, totals: { idle: number; loaded: number }): Promise<void> {
  const rounds = ctx.rounds;
  ctx.log(`${rounds} round(s); every ${INTERVAL_MS} ms one new offender, ${totals.loaded} with wrk saturating the HTTP receiver `
    + `(64 connections, 10,000 rotating addresses) and ${totals.idle} with the receiver idle`);
  // Offender 0 of every run proves the monitor listens and is not counted: each run takes one number more.
  let next = 0;
  const runs = await interleave(['idle', 'loaded'], rounds, async (key): Promise<Run> => {
    const count = Math.ceil(totals[key as 'idle' | 'loaded'] / rounds);
    const first = next;
    next += count + 1;
    const before = await batchCounts(rated);
    const batches = async (): Promise<Run['batches']> => {
      const after = await batchCounts(rated);
      return { all: after.all - before.all, slow: (after.all - after.fast) - (before.all - before.fast) };
    };
    if (key === 'idle') return { samples: await offenders(ctx, ns, first, count), background: null, batches: await batches() };
    const wrkSeconds = LEAD_SECONDS + Math.ceil((count * INTERVAL_MS) / 1000) + 4;
    const loadStarted = performance.timeOrigin + performance.now();
    const background = runWrk({
      namespace: ns, url: `http://127.0.0.1:${PORT}/`, script: LUA.rotate, cpus: ctx.cpus.load, seconds: wrkSeconds,
      env: { BENCH_HEADER: 'X-IP', BENCH_ADDRESSES: '10000' },
    });
    // A failed load must not leave the promise unhandled while the offenders run.
    background.catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, LEAD_SECONDS * 1000));
    const samples = await offenders(ctx, ns, first, count);
    const load = await background;
    const lastKernel = Math.max(...samples.map((s) => s.kernel ?? s.answered));
    // The load must outlast the offenders, or the last of them met an idle receiver.
    if (loadStarted + load.seconds * 1000 < lastKernel) {
      throw new Error(`the background load (${load.seconds.toFixed(1)} s) ended before the offenders did`);
    }
    return { samples, background: load, batches: await batches() };
  });

  const decided = decisions(rated);
  const idle = (runs.get('idle') as Run[]).flatMap((r) => r.samples);
  const loaded = (runs.get('loaded') as Run[]).flatMap((r) => r.samples);
  const background = (runs.get('loaded') as Run[]).map((r) => r.background as WrkResult);
  const sum = (key: 'idle' | 'loaded', f: 'all' | 'slow'): number => (runs.get(key) as Run[]).reduce((n, r) => n + r.batches[f], 0);
  const status = await rated.status();

  const delays = (samples: readonly Sample[], from: (s: Sample) => number | undefined): number[] =>
    samples.map((s) => {
      const t = from(s);
      return s.kernel === null || t === undefined ? Infinity : s.kernel - t;
    });
  const fromSent = { idle: delays(idle, (s) => s.sent), loaded: delays(loaded, (s) => s.sent) };
  const fromAnswer = delays(loaded, (s) => s.answered);
  const fromDecision = delays(loaded, (s) => decided.get(s.ip));
  const answerDelay = loaded.map((s) => s.answered - s.sent);
  const missing = (samples: readonly Sample[]): number => samples.filter((s) => s.kernel === null).length;
  const ms = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(1)} ms` : 'never');
  const bgRate = background.reduce((n, w) => n + w.requests, 0) / Math.max(1e-9, background.reduce((n, w) => n + w.seconds, 0));

  const notes = [
    `measured from sending the crossing notification to the kernel's event for the element (nft -j monitor new elements, read inside the namespace); `
      + `${loaded.length} offenders under load, ${idle.length} idle, one every ${INTERVAL_MS} ms`,
    `under load: p50 ${ms(percentile(fromSent.loaded, 50))}; the notification's answer took p50 ${ms(percentile(answerDelay, 50))}, p99 ${ms(percentile(answerDelay, 99))}; `
      + `answer → kernel p50 ${ms(percentile(fromAnswer, 50))}, p99 ${ms(percentile(fromAnswer, 99))}; `
      + `"blocked" log line → kernel p50 ${ms(percentile(fromDecision, 50))}, p99 ${ms(percentile(fromDecision, 99))} (log times in whole ms)`,
    `background load ${Math.round(bgRate).toLocaleString('en-US')} notifications/s`,
    missing(loaded) + missing(idle) > 0 ? `${missing(loaded) + missing(idle)} offenders not in the kernel after 10 s (counted as never)` : '',
    `nft batches over 100 ms (the daemon's rated_firewall_batch_seconds): ${sum('loaded', 'slow')} of ${sum('loaded', 'all')} under load, `
      + `${sum('idle', 'slow')} of ${sum('idle', 'all')} idle${status.firewall.refused ? `; ${status.firewall.refused} refused` : ''}`,
  ].filter(Boolean);
  // p99 carries the target and the notes; p50 goes with it.
  for (const p of [99, 50]) {
    const underLoad = percentile(fromSent.loaded, p);
    const atRest = percentile(fromSent.idle, p);
    ctx.results.add(NAME, {
      name: `single offender under load: crossing notification → in the kernel, p${p}`,
      value: Number.isFinite(underLoad) ? underLoad : null,
      unit: 'ms',
      baseline: Number.isFinite(atRest) ? { name: `p${p} with the receiver idle`, value: atRest, unit: 'ms' } : null,
      ratio: 'lower',
      ...(p === 99 ? { target: { of: 'value', op: '<=', bound: TARGET_MS } as const, note: notes.join('; ') } : {}),
    });
  }
}

/** When the daemon decided each block: its "blocked" log lines (ip → wall-clock ms). */
function decisions(rated: BenchRated): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of readFileSync(rated.proc.logFile, 'utf8').split('\n')) {
    if (!line.includes('"msg":"blocked"')) continue;
    try {
      const entry = JSON.parse(line) as { ip?: string; time?: string | number };
      const at = typeof entry.time === 'number' ? entry.time : Date.parse(entry.time ?? '');
      if (entry.ip && Number.isFinite(at)) out.set(entry.ip, at);
    } catch {
      // not a log line of ours
    }
  }
  return out;
}

/** The nearest-rank percentile; a missing sample (Infinity) counts as slower than all. */
function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number;
}
