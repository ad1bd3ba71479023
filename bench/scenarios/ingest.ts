// Receiver ingestion: how many notifications rated's receivers take in per
// second, with real counting, against bare Node servers that do nothing but
// answer (HTTP) or count datagrams (UDP). Both run side by side on the same
// CPU and are loaded in turn.
import { join } from 'node:path';
import { execa } from 'execa';
import { createNamespace, type Namespace } from '../../test/helpers/netns.js';
import { waitFor } from '../../test/helpers/wait-for.js';
import { lastWords, tool, type BenchContext, type Scenario } from '../lib/context.js';
import { interleave, median, spread } from '../lib/interleave.js';
import { spawnProc, type Proc } from '../lib/proc.js';
import { arrived, startBenchRated, type BenchRated, type RatedRule } from '../lib/rated.js';
import { LUA, runWrk, type WrkResult } from '../lib/wrk.js';

const NAME = 'ingest';
const ADDRESSES = 10_000;
/** High enough that no client is blocked: the run measures counting, not blocking. */
const RULE: RatedRule = { name: 'bench', limit: 1_000_000, window: '60s', block: '60s' };
const PORT = { bareHttp: 9100, ratedHttp: 9101, bareUdp: 9200, ratedUdp: 9201 };
/** The rate at which nginx's syslog output was measured to run (about 25,000 requests/s). */
const STEADY_RATE = 25_000;
const UDP_TARGET = { of: 'ratio', op: '>=', bound: 0.85 } as const;

export const ingest: Scenario = {
  name: NAME,
  title: 'Receiver ingestion: rated\'s receivers against bare Node servers',
  tools: ['ip', 'wrk', 'taskset'],
  root: true,
  async run(ctx) {
    const ns = await createNamespace('rb-ing');
    try {
      await http(ctx, ns);
      await udp(ctx, ns);
    } finally {
      await ns.delete();
    }
  },
};

async function http(ctx: BenchContext, ns: Namespace): Promise<void> {
  ctx.log(`HTTP: bare node:http (204) on :${PORT.bareHttp} and rated (one rule, real counting) on :${PORT.ratedHttp}, ${ADDRESSES.toLocaleString('en-US')} rotating X-IP addresses`);
  const bare = spawnProc([process.execPath, tool('bare-http.mjs'), String(PORT.bareHttp)], {
    name: 'bare-http', namespace: ns, cpus: ctx.cpus.server, logFile: join(ctx.scratch, 'ingest-bare-http.log'),
  });
  let rated: BenchRated | null = null;
  try {
    await bare.waitForOutput(/listening/);
    rated = await startBenchRated({ namespace: ns, scratch: ctx.scratch, cpus: ctx.cpus.server, http: PORT.ratedHttp, rules: [RULE] });
    const idle = rated.proc.memory();
    const ports: Record<string, number> = { bare: PORT.bareHttp, rated: PORT.ratedHttp };
    const load = (key: string, seconds: number): Promise<WrkResult> => runWrk({
      namespace: ns, url: `http://127.0.0.1:${ports[key]}/`, script: LUA.rotate, cpus: ctx.cpus.load, seconds,
      env: { BENCH_HEADER: 'X-IP', BENCH_ADDRESSES: String(ADDRESSES) },
    });
    for (const key of ['bare', 'rated']) await load(key, ctx.warmupSeconds);
    const daemon = rated;
    let sent = 0;
    let counted = 0;
    const runs = await interleave(['bare', 'rated'], ctx.rounds, async (key) => {
      if (key === 'bare') return load(key, ctx.seconds);
      const before = (await daemon.status()).receivers.http?.received ?? 0;
      const result = await load(key, ctx.seconds);
      counted += ((await daemon.status()).receivers.http?.received ?? 0) - before;
      sent += result.requests;
      return result;
    });
    const memory = rated.proc.memory();
    const bareMemory = bare.memory();
    const status = await rated.status();

    const base = runs.get('bare') as WrkResult[];
    const subject = runs.get('rated') as WrkResult[];
    const rps = (rs: WrkResult[]): number => median(rs.map((r) => r.rps));
    const p99 = (rs: WrkResult[]): string => `${median(rs.map((r) => r.latencyP99Ms ?? NaN)).toFixed(2)} ms`;
    const non2xx = subject.reduce((n, r) => n + r.non2xx, 0);
    const notes = [
      `p99 latency ${p99(subject)} (bare ${p99(base)})`,
      `counted ${(100 * counted / Math.max(1, sent)).toFixed(1)} % of the answered notifications, ${status.trackedClients.toLocaleString('en-US')} clients tracked`,
      spread(subject.map((r) => r.rps)) && `rated ${spread(subject.map((r) => r.rps))}, bare ${spread(base.map((r) => r.rps))}`,
      non2xx > 0 ? `${non2xx} answers were not 2xx` : '',
      status.activeBlocks > 0 ? `${status.activeBlocks} clients were blocked` : '',
    ].filter(Boolean);
    ctx.results.add(NAME, {
      name: 'HTTP receiver, notifications/s',
      value: rps(subject),
      unit: '/s',
      baseline: { name: 'bare node:http 204', value: rps(base), unit: '/s' },
      ratio: 'higher',
      target: { of: 'ratio', op: '>=', bound: 0.85 },
      note: notes.join('; '),
    });
    if (memory) {
      ctx.results.add(NAME, {
        name: `HTTP receiver, RSS with ${ADDRESSES.toLocaleString('en-US')} clients tracked`,
        value: memory.rssMB,
        unit: 'MB',
        baseline: bareMemory ? { name: 'bare node:http', value: bareMemory.rssMB, unit: 'MB' } : null,
        ratio: null,
        note: `peak ${memory.peakMB.toFixed(1)} MB${bareMemory ? ` (bare ${bareMemory.peakMB.toFixed(1)} MB)` : ''}${idle ? `; ${idle.rssMB.toFixed(1)} MB right after start` : ''}`,
      });
    }
  } finally {
    await rated?.stop();
    await bare.stop();
  }
}

/** One UDP flood: the sender's count, and what the receiver took in. */
interface Flood {
  readonly sent: number;
  readonly seconds: number;
  readonly arrived: number;
}

/** Sends datagrams from the load CPU for `seconds`, then waits for the receiver's count to settle. */
async function flood(ctx: BenchContext, ns: Namespace, port: number, seconds: number, rate: number, count: () => Promise<number>): Promise<Flood> {
  const before = await count();
  const r = await execa('ip', ['netns', 'exec', ns.name, ...(ctx.cpus.load !== null ? ['taskset', '-c', ctx.cpus.load] : []),
    process.execPath, tool('udp-flood.mjs'), String(port), String(seconds), String(rate), String(ADDRESSES)], {
    timeout: (seconds + 30) * 1000, killSignal: 'SIGKILL', input: '',
  });
  const out = JSON.parse(r.stdout.trim()) as { sent: number; seconds: number };
  let last = -1;
  let now = await count();
  for (let i = 0; i < 50 && now !== last; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    last = now;
    now = await count();
  }
  return { sent: out.sent, seconds: out.seconds, arrived: now - before };
}

async function udp(ctx: BenchContext, ns: Namespace): Promise<void> {
  ctx.log(`UDP: bare node:dgram counter on :${PORT.bareUdp} and rated's UDP receiver on :${PORT.ratedUdp}`);
  let rated: BenchRated | null = null;
  try {
    rated = await startBenchRated({ namespace: ns, scratch: ctx.scratch, cpus: ctx.cpus.server, udp: PORT.ratedUdp, rules: [RULE] });
  } catch (err) {
    ctx.results.unavailable(NAME, 'UDP receiver, datagrams/s', `rated does not start with receivers.udp: ${lastWords(err)}`, UDP_TARGET);
    return;
  }
  const bare = spawnProc([process.execPath, tool('bare-udp.mjs'), String(PORT.bareUdp)], {
    name: 'bare-udp', namespace: ns, cpus: ctx.cpus.server, logFile: join(ctx.scratch, 'ingest-bare-udp.log'),
  });
  try {
    if (!rated.started.udp || !(await rated.status()).receivers.udp) {
      ctx.results.unavailable(NAME, 'UDP receiver, datagrams/s', 'this build of rated has no UDP receiver (receivers.udp)', UDP_TARGET);
      return;
    }
    await bare.waitForOutput(/listening/);
    const daemon = rated;
    const targets: Record<string, { port: number; count: () => Promise<number> }> = {
      bare: { port: PORT.bareUdp, count: () => bareUdpCount(bare) },
      rated: { port: PORT.ratedUdp, count: async () => arrived((await daemon.status()).receivers.udp) },
    };
    const send = (key: string, seconds: number, rate: number): Promise<Flood> => {
      const t = targets[key] as { port: number; count: () => Promise<number> };
      return flood(ctx, ns, t.port, seconds, rate, t.count);
    };
    for (const key of ['bare', 'rated']) await send(key, ctx.warmupSeconds, 0);
    const max = await interleave(['bare', 'rated'], ctx.rounds, (key) => send(key, ctx.seconds, 0));
    const steady = await interleave(['bare', 'rated'], 1, (key) => send(key, ctx.seconds, STEADY_RATE));
    const memory = daemon.proc.memory();

    const perSecond = (fs: Flood[]): number => median(fs.map((f) => f.arrived / f.seconds));
    const sentPerSecond = (fs: Flood[]): number => median(fs.map((f) => f.sent / f.seconds));
    const loss = (fs: Flood[]): string => `${median(fs.map((f) => 100 * Math.max(0, 1 - f.arrived / f.sent))).toFixed(1)} %`;
    const describe = (fs: Flood[]): string => `sent ${Math.round(sentPerSecond(fs)).toLocaleString('en-US')}/s, lost ${loss(fs)}`;
    for (const [label, runs, target] of [
      ['as fast as one sender goes', max, UDP_TARGET],
      [`${STEADY_RATE.toLocaleString('en-US')}/s offered`, steady, null],
    ] as const) {
      const s = runs.get('rated') as Flood[];
      const b = runs.get('bare') as Flood[];
      ctx.results.add(NAME, {
        name: `UDP receiver, datagrams/s taken in (${label})`,
        value: perSecond(s),
        unit: '/s',
        baseline: { name: 'bare node:dgram', value: perSecond(b), unit: '/s' },
        ratio: 'higher',
        target,
        note: `rated: ${describe(s)}; bare: ${describe(b)}`,
      });
    }
    if (memory) {
      ctx.results.add(NAME, { name: 'UDP receiver, RSS after the run', value: memory.rssMB, unit: 'MB', note: `peak ${memory.peakMB.toFixed(1)} MB` });
    }
  } finally {
    await rated.stop();
    await bare.stop();
  }
}

/** Asks the bare UDP receiver for its count (SIGUSR2) and reads the line it prints. */
export async function bareUdpCount(bare: Proc): Promise<number> {
  const lines = (): string[] => bare.output(1000).split('\n').filter((l) => l.startsWith('{'));
  const before = lines().length;
  process.kill(bare.pid, 'SIGUSR2');
  const line = await waitFor(() => {
    const l = lines();
    return l.length > before ? l[l.length - 1] : undefined;
  }, { timeoutMs: 2000, intervalMs: 10, what: 'the bare UDP receiver\'s count' });
  return (JSON.parse(line) as { datagrams: number }).datagrams;
}
