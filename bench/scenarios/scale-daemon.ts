// Attack scale through the daemon, measured by packets: with N blocks in force
// (preloaded through the control API), a client namespace connects to the
// server namespace again and again, and the time is taken from a command
// until its packets are dropped or pass again. Against it, in the same run,
// the CLI's own start-up (`rated --version`): the target is what a change adds
// to it. Also: a new offender's crossing notification until its packets drop
// (p50/p99), 10,000 renewals and 20,000 unblocks through the control API,
// `rated list` (first line, all), and the daemon's memory.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { createInterface, type Interface } from 'node:readline';
import { callApi } from '../../src/control/client.js';
import { createNamespace, veth, type Namespace } from '../../test/helpers/netns.js';
import { benchAddress, mustRun, tool, type BenchContext } from '../lib/context.js';
import { median } from '../lib/interleave.js';
import type { RowInput } from '../lib/results.js';
import { readMemory, spawnProc, type Proc } from '../lib/proc.js';
import { BIN, startBenchRated, type BenchRated } from '../lib/rated.js';

const NAME = 'scale';
const HTTP_PORT = 9111;
const SINK_PORT = 9112;
const SERVER = '10.99.0.1';
const CLIENT = '10.99.0.2';
/** Addresses the client namespace also holds, each a new offender once. */
const probeAddress = (k: number): string => `10.99.1.${k + 1}`;
const PROBES = 60;
const RULE = { name: 'attack', limit: 1, window: '10m', block: '1h' };
const BATCH = 10_000;
/** DELETE requests in flight: each is answered once its change is in the kernel, so more in flight make bigger transactions. */
const UNBLOCKS_IN_FLIGHT = 64;
/** How long the daemon is left idle before its memory is read again (it gives a burst's garbage back when quiet). */
const SETTLE_MS = 25_000;

export type ScaleBackend = 'nftables' | 'ipset';

/** A helper process in a namespace (bench/tools/scale-agent.mjs), one command line at a time. */
class Agent {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly lines: Interface;
  private readonly waiting: Array<(line: string) => void> = [];

  constructor(ns: Namespace) {
    this.child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, tool('scale-agent.mjs')], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.lines = createInterface({ input: this.child.stdout });
    this.lines.on('line', (line) => this.waiting.shift()?.(line));
  }

  /** Sends one command; resolves with its answer (bounded: 30 s). */
  ask(command: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer to "${command}" within 30 s`)), 30_000);
      this.waiting.push((line) => {
        clearTimeout(timer);
        if (line.startsWith('error ')) reject(new Error(line));
        else resolve(line);
      });
      this.child.stdin.write(`${command}\n`);
    });
  }

  /** The time in an answer ("… T"). */
  static at(answer: string): number {
    if (answer.includes(' timeout ')) throw new Error(`the probe gave up: ${answer}`);
    return Number(answer.split(' ').at(-1));
  }

  close(): void {
    this.child.stdin.end();
    this.child.kill('SIGTERM');
  }
}

const wallNow = (): number => performance.timeOrigin + performance.now();

/** Whole-process time of `rated ARGS` from spawn to exit; rejects when it fails. */
async function cliTime(args: readonly string[]): Promise<{ began: number; ms: number }> {
  const began = wallNow();
  const code = await new Promise<number | null>((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
    p.once('close', resolve);
  });
  if (code !== 0) throw new Error(`rated ${args.join(' ')} exited ${String(code)}`);
  return { began, ms: wallNow() - began };
}

async function api(rated: BenchRated, method: string, path: string, body?: unknown): Promise<unknown> {
  const r = await callApi(rated.socket, method, path, body, 120_000);
  if (r.status >= 300) throw new Error(`${method} ${path} answered ${r.status}: ${r.text.slice(0, 200)}`);
  return r.body;
}

/** Blocks `ips` through POST /blocks/batch, BATCH at a time, two requests in flight. */
async function blockBatches(rated: BenchRated, ips: readonly string[], forText: string): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < ips.length) {
      const slice = ips.slice(next, next + BATCH);
      next += BATCH;
      await api(rated, 'POST', '/blocks/batch', { blocks: slice.map((ip) => ({ ip, for: forText, reason: 'bench preload' })) });
    }
  };
  await Promise.all([worker(), worker()]);
}

/** Waits until the daemon's firewall has applied at least `n` elements. */
async function applied(rated: BenchRated, n: number, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    if ((await rated.status()).firewall.elements >= n) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`fewer than ${n} elements applied after ${ms / 1000} s`);
}

const pct = (xs: readonly number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? Number.NaN;
};

/** Every figure of one backend at one size. */
export async function throughDaemon(ctx: BenchContext, backend: ScaleBackend, n: number): Promise<void> {
  const label = n.toLocaleString('en-US');
  const srv = await createNamespace('rb-atk-s');
  const cli = await createNamespace('rb-atk-c');
  let rated: BenchRated | null = null;
  let sink: Proc | null = null;
  const agents: Agent[] = [];
  const add = (name: string, row: Omit<RowInput, 'name'>): void => {
    ctx.results.add(NAME, { ...row, name: `${name}, ${label} blocks, ${backend}` });
  };
  try {
    const link = await veth(srv, cli, { a: `${SERVER}/16`, b: `${CLIENT}/16` });
    for (let k = 0; k < PROBES + 2; k++) await mustRun(cli, 'ip', ['addr', 'add', `${probeAddress(k)}/16`, 'dev', link.b]);
    sink = spawnProc([process.execPath, '-e', `require('node:net').createServer((s) => s.destroy()).listen(${SINK_PORT}, '${SERVER}')`], {
      name: 'sink', namespace: srv, cpus: ctx.cpus.load, logFile: `${ctx.scratch}/sink-${backend}-${n}.log`,
    });
    rated = await startBenchRated({
      namespace: srv, scratch: ctx.scratch, cpus: ctx.cpus.server, http: HTTP_PORT, rules: [RULE], startTimeoutMs: 120_000,
      config: { firewall: { backend, table: 'rated' } },
    });
    const inSrv = new Agent(srv);
    const inCli = new Agent(cli);
    agents.push(inSrv, inCli);
    const socket = rated.socket;

    ctx.log(`scale (${backend}): preloading ${label} blocks through POST /blocks/batch`);
    const t0 = performance.now();
    await blockBatches(rated, Array.from({ length: n }, (_, k) => benchAddress(k)), '1h');
    await applied(rated, n, 600_000);
    const preloadS = (performance.now() - t0) / 1000;
    add('preload through the control API until all are in the kernel', { value: preloadS, unit: 's', note: `${BATCH.toLocaleString('en-US')} per request, two in flight` });

    // The probe works before anything is measured: the sink answers the client.
    Agent.at(await inCli.ask(`pass ${CLIENT} ${SERVER} ${SINK_PORT}`));

    // rated block / unblock until the packets drop / pass, against the CLI's own start: right after the
    // preload (the daemon still writes its journal's snapshot and collects the burst's garbage), then once quiet.
    const rounds = async (when: string, target: boolean): Promise<void> => {
      const version: number[] = [];
      const blockMs: number[] = [];
      const unblockMs: number[] = [];
      for (let round = 0; round < 5; round++) {
        version.push((await cliTime(['--version'])).ms);
        const watchingDrop = inCli.ask(`drop ${CLIENT} ${SERVER} ${SINK_PORT}`);
        const b = await cliTime(['block', CLIENT, '--for', '1h', '--socket', socket]);
        blockMs.push(Agent.at(await watchingDrop) - b.began);
        const watchingPass = inCli.ask(`pass ${CLIENT} ${SERVER} ${SINK_PORT}`);
        const u = await cliTime(['unblock', CLIENT, '--socket', socket]);
        unblockMs.push(Agent.at(await watchingPass) - u.began);
      }
      const versionMs = median(version);
      for (const [what, xs] of [['`rated block` until the packets drop', blockMs], ['`rated unblock` until the packets pass', unblockMs]] as const) {
        add(`${what}, ${when}`, {
          value: median(xs) - versionMs,
          unit: 'ms',
          ...(target ? { target: { of: 'value', op: '<=', bound: 100 } } : {}),
          note: `beyond the CLI's own start (\`rated --version\`, ${versionMs.toFixed(0)} ms); whole: ${xs.map((x) => x.toFixed(0)).join(', ')} ms; packets from a client namespace, a connection attempt every 2 ms`,
        });
      }
    };
    await rounds('right after the preload', false);
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    await rounds('once the daemon is quiet', true);

    // New offenders: the crossing notification until their packets drop.
    const crossing: number[] = [];
    for (let k = 0; k < PROBES; k++) {
      const ip = probeAddress(k);
      await inSrv.ask(`notify ${HTTP_PORT} ${ip} 1`);
      const watching = inCli.ask(`drop ${ip} ${SERVER} ${SINK_PORT}`);
      const sent = Agent.at(await inSrv.ask(`notify ${HTTP_PORT} ${ip} 1`));
      crossing.push(Agent.at(await watching) - sent);
    }
    add('a new offender: crossing notification until its packets drop, p50', { value: pct(crossing, 50), unit: 'ms', note: `${PROBES} offenders, one after the other` });
    add('a new offender: crossing notification until its packets drop, p99', { value: pct(crossing, 99), unit: 'ms', target: { of: 'value', op: '<=', bound: 50 }, note: `${PROBES} offenders; the probe's own resolution is 2 ms; the slowest: ${[...crossing].sort((a, b) => b - a).slice(0, 5).map((x) => x.toFixed(0)).join(', ')} ms` });

    // 10,000 renewals in one request: every one longer than before.
    const renew = Array.from({ length: 10_000 }, (_, k) => benchAddress(k));
    const before = (await rated.status()).firewall.batches;
    let t = performance.now();
    await blockBatches(rated, renew, '2h');
    const deadline = performance.now() + 120_000;
    while ((await rated.status()).firewall.batches === before && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    add('10,000 renewals through the control API, until committed', { value: performance.now() - t, unit: 'ms', note: 'POST /blocks/batch with a longer duration; ends when the firewall batch is counted' });

    // 20,000 unblocks through the control API, then one more whose packets must pass.
    const lift = Array.from({ length: 20_000 }, (_, k) => benchAddress(n - 1 - k));
    const last = probeAddress(PROBES);
    await api(rated, 'POST', '/blocks', { ip: last, for: '1h' });
    Agent.at(await inCli.ask(`drop ${last} ${SERVER} ${SINK_PORT}`));
    t = performance.now();
    let next = 0;
    await Promise.all(Array.from({ length: UNBLOCKS_IN_FLIGHT }, async () => {
      while (next < lift.length) {
        const ip = lift[next++] as string;
        await api(rated as BenchRated, 'DELETE', `/blocks/${ip}`);
      }
    }));
    const watching = inCli.ask(`pass ${last} ${SERVER} ${SINK_PORT}`);
    const liftedAt = wallNow();
    await api(rated, 'DELETE', `/blocks/${last}`);
    const passed = Agent.at(await watching);
    add('20,000 unblocks through the control API, then one more until its packets pass', {
      value: performance.now() - t, unit: 'ms', note: `${UNBLOCKS_IN_FLIGHT} requests in flight, each answered once its change is in the kernel; the last one's packets passed ${(passed - liftedAt).toFixed(0)} ms after its request`,
    });

    // rated list: first line, and all of it.
    const list = await new Promise<{ first: number; all: number; lines: number }>((resolve, reject) => {
      const began = performance.now();
      let first = 0;
      let lines = 0;
      const p = spawn(process.execPath, [BIN, 'list', '--socket', socket], { stdio: ['ignore', 'pipe', 'inherit'] });
      p.stdout.on('data', (chunk: Buffer) => {
        if (first === 0) first = performance.now() - began;
        for (const byte of chunk) if (byte === 10) lines++;
      });
      p.once('close', (code) => (code === 0 ? resolve({ first, all: performance.now() - began, lines }) : reject(new Error(`rated list exited ${String(code)}`))));
    });
    add('`rated list`: first line', { value: list.first / 1000, unit: 's', target: { of: 'value', op: '<=', bound: 1 }, note: `${list.lines.toLocaleString('en-US')} lines` });
    add('`rated list`: all of it', { value: list.all / 1000, unit: 's', target: { of: 'value', op: '<=', bound: 10 } });

    const busy = readMemory(rated.proc.pid);
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    const mem = readMemory(rated.proc.pid);
    add('daemon memory once quiet', {
      value: mem?.rssMB ?? null, unit: 'MB', target: { of: 'value', op: '<=', bound: n > 100_000 ? 600 : 150 },
      note: `VmRSS ${SETTLE_MS / 1000} s after the last request; right after it ${busy?.rssMB.toFixed(0) ?? '?'} MB; peak ${mem?.peakMB.toFixed(0) ?? '?'} MB`,
    });
  } finally {
    for (const a of agents) a.close();
    await rated?.stop();
    await sink?.stop();
    await cli.delete();
    await srv.delete();
  }
}
