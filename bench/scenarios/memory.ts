// Memory: the daemon's resident set with 1,000,000 distinct IPv4 clients
// tracked, and after 1,000,000 distinct IPv6 addresses from one /64 (which
// the default ipv6Prefix counts as one client, so memory must stay flat).
// Each is a fresh daemon (dry-run firewall: nobody is blocked anyway), fed
// through its UDP receiver with 50 lines per datagram, paced so that the
// kernel drops little; a part with losses is sent again, which adds no
// client twice. The baseline is the same daemon right after it started.
import { execa } from 'execa';
import { setTimeout as delay } from 'node:timers/promises';
import { createNamespace, type Namespace } from '../../test/helpers/netns.js';
import { tool, type BenchContext, type Scenario } from '../lib/context.js';
import type { Memory } from '../lib/proc.js';
import { arrived, startBenchRated, type BenchRated, type RatedRule } from '../lib/rated.js';

const NAME = 'memory';
const PORT = 9201;
/** High enough that no client is blocked, over a window longer than the run: every client stays tracked. */
const RULE: RatedRule = { name: 'bench', limit: 1_000_000_000, window: '30m', block: '1m' };
const LINES_PER_DATAGRAM = 50;
/** Lines per part; each part is checked before the next is sent. */
const PART = 100_000;
/** Lines per second at the start; raised after a part without loss, lowered after one with. */
const FIRST_RATE = 40_000;
const MAX_RATE = 200_000;
const MIN_RATE = 5_000;
/** A part that lost more than this share is sent again. */
const TOLERATED_LOSS = 0.002;
const ATTEMPTS = 4;
/** What "flat" means: the IPv6 flood may add at most this share to the RSS right after start. */
const FLAT = 0.8;

export const memory: Scenario = {
  name: NAME,
  title: 'Memory: RSS with 1,000,000 IPv4 clients tracked, and after 1,000,000 IPv6 addresses from one /64',
  tools: ['ip', 'taskset'],
  root: true,
  async run(ctx) {
    const n = ctx.quick ? 100_000 : 1_000_000;
    const ns = await createNamespace('rb-mem');
    try {
      await ipv4(ctx, ns, n);
      await ipv6(ctx, ns, n);
    } finally {
      await ns.delete();
    }
  },
};

/** What feeding a daemon took. */
interface Fed {
  /** Lines the sender handed to the kernel, resent parts included. */
  readonly sent: number;
  /** Lines the daemon took in (accepted, rejected or ignored). */
  readonly arrived: number;
  readonly parts: number;
  readonly resent: number;
  readonly seconds: number;
  /** The kernel's drop count for the receiver's socket (resent parts included). */
  readonly drops: number | null;
}

async function start(ctx: BenchContext, ns: Namespace, n: number): Promise<{ rated: BenchRated; idle: Memory }> {
  const rated = await startBenchRated({
    namespace: ns, scratch: ctx.scratch, cpus: ctx.cpus.server, udp: PORT, rules: [RULE], args: ['--dry-run'],
    config: { tracking: { maxClients: Math.max(1_000_000, n) } },
  });
  // Let start-up settle (JIT, the first timers) before the baseline is read.
  await delay(1000);
  const idle = rated.proc.memory();
  if (!idle) throw new Error(`rated exited right after start:\n${rated.proc.output()}`);
  return { rated, idle };
}

/** The daemon's count of lines taken in, once it stops changing (the receiver has worked off its queue). */
async function settled(rated: BenchRated): Promise<number> {
  let last = -1;
  let now = arrived((await rated.status()).receivers.udp);
  for (let i = 0; i < 100 && now !== last; i++) {
    await delay(200);
    last = now;
    now = arrived((await rated.status()).receivers.udp);
  }
  return now;
}

/**
 * Sends one line for each of `n` addresses, part by part: after each part it
 * waits for the daemon to take in what arrived, and sends the part again
 * (slower) when too much was lost, or when `complete` says it is not all there.
 */
async function feed(ctx: BenchContext, ns: Namespace, rated: BenchRated, family: 4 | 6, n: number,
  complete: (end: number) => Promise<boolean>): Promise<Fed> {
  const t0 = performance.now();
  let rate = FIRST_RATE;
  let sent = 0;
  let got = 0;
  let parts = 0;
  let resent = 0;
  for (let first = 0; first < n; first += PART) {
    const count = Math.min(PART, n - first);
    for (let attempt = 1; ; attempt++) {
      const before = await settled(rated);
      const seconds = Math.ceil(count / rate) + 10;
      const r = await execa('ip', ['netns', 'exec', ns.name, ...(ctx.cpus.load !== null ? ['taskset', '-c', ctx.cpus.load] : []),
        process.execPath, tool('udp-lines.mjs'), String(PORT), String(family), String(first), String(count),
        String(LINES_PER_DATAGRAM), String(rate), String(seconds)], {
        reject: false, input: '', timeout: (seconds + 30) * 1000, killSignal: 'SIGKILL',
      });
      if (r.exitCode !== 0) throw new Error(`udp-lines.mjs failed (${r.exitCode ?? r.signal ?? 'killed'}): ${r.stderr.trim()}`);
      const out = JSON.parse(r.stdout.trim()) as { lines: number; datagrams: number; failed: number; seconds: number };
      const took = (await settled(rated)) - before;
      parts++;
      sent += out.lines;
      got += took;
      const lost = out.lines > 0 ? 1 - took / out.lines : 1;
      const ok = out.lines === count && lost <= TOLERATED_LOSS && await complete(first + count);
      if (ok) {
        rate = Math.min(MAX_RATE, Math.round(rate * 1.25));
        break;
      }
      rate = Math.max(MIN_RATE, Math.round(rate * 0.6));
      if (attempt >= ATTEMPTS) {
        throw new Error(`${family === 4 ? 'IPv4' : 'IPv6'} addresses ${first}–${first + count - 1}: still incomplete after ${attempt} attempts `
          + `(last: ${out.lines} of ${count} lines sent, ${took} taken in)`);
      }
      resent++;
      ctx.log(`part ${first}–${first + count - 1}: ${(100 * lost).toFixed(1)} % lost, sending it again at ${rate.toLocaleString('en-US')} lines/s`);
    }
  }
  const status = await rated.status();
  const drops = typeof status.receivers.udp?.drops === 'number' ? status.receivers.udp.drops : null;
  return { sent, arrived: got, parts, resent, seconds: (performance.now() - t0) / 1000, drops };
}

function describeFeed(f: Fed): string {
  return `${f.sent.toLocaleString('en-US')} lines sent in ${f.parts} parts of ≤ ${PART.toLocaleString('en-US')} (${f.resent} sent again), `
    + `${f.arrived.toLocaleString('en-US')} taken in, ${f.drops ?? '?'} datagrams dropped by the kernel, `
    + `${Math.round(f.sent / f.seconds).toLocaleString('en-US')} lines/s on average over ${f.seconds.toFixed(1)} s`;
}

async function ipv4(ctx: BenchContext, ns: Namespace, n: number): Promise<void> {
  const label = n.toLocaleString('en-US');
  ctx.log(`IPv4: ${label} distinct clients (10.0.0.0 and up) through the UDP receiver, ${LINES_PER_DATAGRAM} lines per datagram`);
  const { rated, idle } = await start(ctx, ns, n);
  try {
    const fed = await feed(ctx, ns, rated, 4, n, async (end) => (await rated.status()).trackedClients >= end);
    const tracked = (await rated.status()).trackedClients;
    const full = rated.proc.memory();
    if (!full) throw new Error(`rated exited while being fed:\n${rated.proc.output()}`);
    const perClient = ((full.rssMB - idle.rssMB) * 2 ** 20) / Math.max(1, tracked);
    ctx.results.add(NAME, {
      name: `RSS with ${label} distinct IPv4 clients tracked`,
      value: full.rssMB,
      unit: 'MB',
      baseline: { name: 'right after start', value: idle.rssMB, unit: 'MB' },
      ratio: null,
      target: { of: 'value', op: '<=', bound: 250 },
      note: `VmRSS from /proc/PID/status; ${tracked.toLocaleString('en-US')} clients tracked (status), peak (VmHWM) ${full.peakMB.toFixed(1)} MB, `
        + `≈ ${Math.round(perClient)} bytes per client above the start; one rule; ${describeFeed(fed)}`,
    });
  } finally {
    await rated.stop();
  }
}

async function ipv6(ctx: BenchContext, ns: Namespace, n: number): Promise<void> {
  const label = n.toLocaleString('en-US');
  ctx.log(`IPv6: ${label} distinct addresses from 2001:db8:1:2::/64 through the UDP receiver (default ipv6Prefix 64)`);
  const { rated, idle } = await start(ctx, ns, n);
  try {
    const fed = await feed(ctx, ns, rated, 6, n, () => Promise.resolve(true));
    const status = await rated.status();
    const after = rated.proc.memory();
    if (!after) throw new Error(`rated exited while being fed:\n${rated.proc.output()}`);
    const rejected = status.receivers.udp?.rejected ?? 0;
    ctx.results.add(NAME, {
      name: `RSS after ${label} distinct IPv6 addresses from one /64`,
      value: after.rssMB,
      unit: 'MB',
      baseline: { name: 'right after start', value: idle.rssMB, unit: 'MB' },
      ratio: 'lower',
      target: { of: 'ratio', op: '>=', bound: FLAT },
      note: `flat means at most ${Math.round((1 / FLAT - 1) * 100)} % above the start (1,000,000 clients of their own would take hundreds of MB); `
        + `${status.trackedClients.toLocaleString('en-US')} client(s) tracked, ${rejected} lines rejected, peak (VmHWM) ${after.peakMB.toFixed(1)} MB; ${describeFeed(fed)}`,
    });
  } finally {
    await rated.stop();
  }
}
