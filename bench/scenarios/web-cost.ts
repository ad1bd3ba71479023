// Cost to the web server: nginx serving a small static file on its own,
// against nginx reporting every request to rated through each input
// (post_action, access_log syslog:, a buffered log file rated follows) and
// to bare Node receivers through the same inputs. Every variant is its own
// nginx, all running side by side on the server CPU and loaded in turn.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createNamespace } from '../../test/helpers/netns.js';
import { lastWords, tool, type BenchContext, type Scenario } from '../lib/context.js';
import { interleave, median, spread } from '../lib/interleave.js';
import { startBenchNginx, type BenchNginx, type Report } from '../lib/nginx.js';
import { spawnProc, type Proc } from '../lib/proc.js';
import { arrived, startBenchRated, type BenchRated, type RatedRule } from '../lib/rated.js';
import { LUA, runWrk, type WrkResult } from '../lib/wrk.js';
import { bareUdpCount } from './ingest.js';

const NAME = 'web-cost';
const ADDRESSES = 10_000;
const RULE: RatedRule = { name: 'bench', limit: 1_000_000, window: '60s', block: '60s' };
const PORT = { bareHttp: 9100, ratedHttp: 9101, bareUdp: 9200, ratedUdp: 9201 };

type Input = 'http' | 'udp' | 'files';

interface Variant {
  readonly key: string;
  readonly name: string;
  readonly report: (dir: string) => Report;
  /** Which receiver counts this variant's reports. */
  readonly counter: 'bare-udp' | Input | null;
}

const VARIANTS: readonly Variant[] = [
  { key: 'alone', name: 'nginx alone (no access log)', report: () => ({ kind: 'none' }), counter: null },
  { key: 'post-bare', name: 'nginx + post_action → bare node:http 204', report: () => ({ kind: 'post_action', port: PORT.bareHttp }), counter: null },
  { key: 'post-rated', name: 'nginx + post_action → rated', report: () => ({ kind: 'post_action', port: PORT.ratedHttp }), counter: 'http' },
  { key: 'syslog-bare', name: 'nginx + access_log syslog: → bare node:dgram', report: () => ({ kind: 'syslog', port: PORT.bareUdp }), counter: 'bare-udp' },
  { key: 'syslog-rated', name: 'nginx + access_log syslog: → rated', report: () => ({ kind: 'syslog', port: PORT.ratedUdp }), counter: 'udp' },
  { key: 'file-alone', name: 'nginx + buffered access log file, no reader', report: (d) => ({ kind: 'file', path: join(d, 'alone.log') }), counter: null },
  { key: 'file-rated', name: 'nginx + buffered access log file, followed by rated', report: (d) => ({ kind: 'file', path: join(d, 'followed.log') }), counter: 'files' },
];

/** One measured run of a variant. */
interface Run {
  readonly wrk: WrkResult;
  /** Reports its receiver took in during the run, or null when nothing counts them. */
  readonly counted: number | null;
}

export const webCost: Scenario = {
  name: NAME,
  title: 'Cost to the web server: nginx alone against nginx reporting to rated',
  tools: ['ip', 'wrk', 'taskset', 'nginx', 'curl'],
  root: true,
  async run(ctx) {
    const ns = await createNamespace('rb-web');
    const dir = join(ctx.scratch, 'web-cost');
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    const procs: Proc[] = [];
    const daemons: BenchRated[] = [];
    const servers: BenchNginx[] = [];
    try {
      const reports = new Map(VARIANTS.map((v) => [v.key, v.report(dir)]));
      const counters = new Map<string, () => Promise<number>>();
      const missing = new Map<string, string>();

      for (const [script, port] of [['bare-http.mjs', PORT.bareHttp], ['bare-udp.mjs', PORT.bareUdp]] as const) {
        const p = spawnProc([process.execPath, tool(script), String(port)], {
          name: script, namespace: ns, cpus: ctx.cpus.server, logFile: join(dir, `${script}.log`),
        });
        procs.push(p);
        await p.waitForOutput(/listening/);
        if (script === 'bare-udp.mjs') counters.set('bare-udp', () => bareUdpCount(p));
      }
      // One daemon per input, each with its own table, so every input is measured on its own.
      const followed = reports.get('file-rated');
      for (const input of ['http', 'udp', 'files'] as const) {
        let rated: BenchRated;
        try {
          rated = await startBenchRated({
            namespace: ns, scratch: ctx.scratch, cpus: ctx.cpus.server, rules: [RULE], table: `rated_${input}`,
            http: input === 'http' ? PORT.ratedHttp : null,
            udp: input === 'udp' ? PORT.ratedUdp : null,
            files: input === 'files' && followed?.kind === 'file' ? [followed.path] : [],
          });
        } catch (err) {
          if (input === 'http') throw err;
          missing.set(input, `rated does not start with receivers.${input}: ${lastWords(err)}`);
          continue;
        }
        daemons.push(rated);
        if (!(await rated.status()).receivers[input]) {
          missing.set(input, `this build of rated has no ${input === 'udp' ? 'UDP' : 'file'} receiver (receivers.${input})`);
          continue;
        }
        const r = rated;
        counters.set(input, async () => arrived((await r.status()).receivers[input]));
      }

      const urls = new Map<string, string>();
      const variants = VARIANTS.filter((v) => v.counter === null || v.counter === 'bare-udp' || !missing.has(v.counter));
      for (const [i, v] of variants.entries()) {
        const port = 8000 + i;
        const url = `http://127.0.0.1:${port}/`;
        servers.push(await startBenchNginx({
          namespace: ns, scratch: ctx.scratch, listen: `127.0.0.1:${port}`, report: reports.get(v.key) as Report, realip: true, cpus: ctx.cpus.server,
        }, url));
        urls.set(v.key, url);
      }

      const load = (key: string, seconds: number): Promise<WrkResult> => runWrk({
        namespace: ns, url: urls.get(key) as string, script: LUA.rotate, cpus: ctx.cpus.load, seconds,
        env: { BENCH_HEADER: 'X-Forwarded-For', BENCH_ADDRESSES: String(ADDRESSES) },
      });
      ctx.log(`${variants.length} nginx variants side by side; warming up, then ${ctx.rounds} round(s) of ${ctx.seconds} s each`);
      for (const v of variants) await load(v.key, ctx.warmupSeconds);
      const runs = await interleave(variants.map((v) => v.key), ctx.rounds, async (key): Promise<Run> => {
        const v = variants.find((x) => x.key === key) as Variant;
        const count = v.counter ? counters.get(v.counter) : undefined;
        const before = count ? await settled(count, 300) : 0;
        const wrk = await load(key, ctx.seconds);
        // A buffered log reaches its reader after nginx's flush (1 s); UDP needs its socket drained.
        const counted = count ? (await settled(count, v.counter === 'files' ? 1500 : 300)) - before : null;
        return { wrk, counted };
      });
      report(ctx, runs, missing);
    } finally {
      for (const s of servers) await s.stop();
      for (const d of daemons) await d.stop();
      for (const p of procs) await p.stop();
      await ns.delete();
    }
  },
};

/** Reads a count until it stops changing for `quietMs` (at most 10 s). */
async function settled(count: () => Promise<number>, quietMs: number): Promise<number> {
  let value = await count();
  let since = performance.now();
  const deadline = since + 10_000;
  while (performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const next = await count();
    if (next !== value) {
      value = next;
      since = performance.now();
    } else if (performance.now() - since >= quietMs) break;
  }
  return value;
}

function report(ctx: BenchContext, runs: Map<string, Run[]>, missing: Map<string, string>): void {
  const rps = (key: string): number | null => {
    const rs = runs.get(key);
    return rs && rs.length > 0 ? median(rs.map((r) => r.wrk.rps)) : null;
  };
  const aloneRps = rps('alone');
  if (aloneRps === null) throw new Error('nginx alone was not measured');
  const alone = { name: 'nginx alone', value: aloneRps, unit: 'req/s' };
  for (const v of VARIANTS) {
    const rs = runs.get(v.key);
    const value = rps(v.key);
    if (!rs || value === null) {
      ctx.results.unavailable(NAME, v.name, (v.counter && missing.get(v.counter)) ?? 'not measured');
      continue;
    }
    const notes: string[] = [];
    const counted = rs.filter((r) => r.counted !== null);
    if (counted.length > 0) {
      const share = median(counted.map((r) => (100 * (r.counted as number)) / Math.max(1, r.wrk.requests)));
      notes.push(`receiver took in ${share.toFixed(1)} % of the requests`);
    }
    const non2xx = rs.reduce((n, r) => n + r.wrk.non2xx, 0);
    const errors = rs.reduce((n, r) => n + r.wrk.socketErrors, 0);
    if (non2xx > 0) notes.push(`${non2xx} answers were not 2xx`);
    if (errors > 0) notes.push(`${errors} socket errors`);
    const range = spread(rs.map((r) => r.wrk.rps));
    if (range) notes.push(range);
    ctx.results.add(NAME, {
      name: v.name,
      value,
      unit: 'req/s',
      baseline: v.key === 'alone' ? null : alone,
      ratio: v.key === 'alone' ? null : 'higher',
      note: notes.join('; ') || null,
    });
  }
  const pairs = [
    ['post-rated', 'post-bare', 'post_action: rated against a bare Node receiver', 'post_action → bare node:http', 0.9],
    ['syslog-rated', 'syslog-bare', 'syslog: rated against a bare Node receiver', 'syslog → bare node:dgram', null],
    ['file-rated', 'file-alone', 'log file: followed by rated against not read at all', 'log file, no reader', null],
  ] as const;
  for (const [subject, baseline, name, baseName, bound] of pairs) {
    const value = rps(subject);
    const base = rps(baseline);
    if (value === null && bound === null) continue;
    ctx.results.add(NAME, {
      name,
      value,
      unit: 'req/s',
      baseline: base === null ? null : { name: baseName, value: base, unit: 'req/s' },
      ratio: 'higher',
      target: bound === null ? null : { of: 'ratio', op: '>=', bound },
    });
  }
  const inputs = ['post-rated', 'syslog-rated', 'file-rated'].filter((k) => rps(k) !== null);
  const best = inputs.map((k) => ({ k, rps: rps(k) as number })).sort((a, b) => b.rps - a.rps)[0];
  const bestName = best ? VARIANTS.find((v) => v.key === best.k)?.name.replace(/^nginx \+ /, '') : undefined;
  ctx.results.add(NAME, {
    name: `best input${bestName ? ` (${bestName})` : ''}`,
    value: best?.rps ?? null,
    unit: 'req/s',
    baseline: alone,
    ratio: 'higher',
    target: { of: 'ratio', op: '>=', bound: 0.8 },
    note: inputs.length < 3 ? `among ${inputs.length} of 3 inputs (${3 - inputs.length} not available)` : null,
  });
}
