// A bounded soak: the built daemon on nftables in its own namespace, fed a
// sustained mix of notifications for a set time (offenders that are blocked,
// lifted and escalated again and again, IPv4 and IPv6 churn of clients seen
// once, IPv6 offenders counted by /64, hostile values, allow-listed hits),
// with blocks of 5 to 20 seconds so that blocks and expiries never stop.
// It checks all along that the daemon lives, logs no error, never keeps an
// expired block, and that its memory levels off; at the end, that `rated
// list` and the kernel agree and that every block is lifted on time.
//
//   npm run soak                      # 10 minutes
//   npm run soak -- --minutes 3
//
// Needs root, ip and nft; touches nothing outside the namespace it creates.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { callApi } from '../src/control/client.js';
import { kernelSets } from './helpers/kernel-set.js';
import { createNamespace, type Namespace } from './helpers/netns.js';
import { MAIN_JS, startRated, type LogLine, type Rated } from './helpers/rated.js';
import { waitFor } from './helpers/wait-for.js';

const PORT = 8080;
/** The longest block the rules can give (escalation.max): after that long without traffic, nothing may be blocked. */
const LONGEST_BLOCK_MS = 20_000;

export interface SoakOptions {
  readonly seconds: number;
  /** Progress lines go here (default: stderr). */
  readonly report?: (line: string) => void;
}

export interface SoakResult {
  readonly seconds: number;
  readonly notifications: number;
  readonly rejected: number;
  readonly blocks: number;
  readonly expired: number;
  readonly rssStartMiB: number;
  readonly rssEndMiB: number;
  readonly rssMaxMiB: number;
  /** RSS once warmed up (after the first fifth of the run), the base of the memory bound. */
  readonly rssWarmMiB: number;
  readonly maxActiveBlocks: number;
  readonly maxTrackedClients: number;
}

// Runs inside the namespace: keep-alive connections to the receiver, a
// pipelined batch every 100 ms, one JSON progress line a second. Offenders
// come back again and again (blocked, lifted, escalated); everyone else is
// new each time, in IPv4 and in random IPv6 /64s. A hostile value goes on a
// connection of its own each time, as an attacker's would: a refusal closes
// its connection.
const TRAFFIC = `
const net = require('node:net');
const port = Number(process.argv[1]);
const pick = (n) => Math.floor(Math.random() * n);
const v4Offenders = Array.from({ length: 300 }, (_, i) => '198.18.' + (i >> 8) + '.' + (i & 255));
const v6Offenders = Array.from({ length: 50 }, (_, i) => '2001:db8:ffff:' + i.toString(16) + '::');
const hostile = ['010.1.1.1', '2130706433', 'fe80::1%lo', '192.0.2.1 } ; flush ruleset', '::', '1.2.3', 'localhost', '::ffff:0.0.0.0', '192.0.2.1,192.0.2.2', '１.２.３.４'];
const hex = () => pick(0x10000).toString(16);
let sent = 0, answered = 0, rejected = 0, stopping = false;
function batch() {
  const ips = [];
  for (let k = 0; k < 10; k++) { const ip = v4Offenders[pick(v4Offenders.length)]; for (let h = 0; h < 5; h++) ips.push(ip); }
  for (let k = 0; k < 5; k++) { const p = v6Offenders[pick(v6Offenders.length)]; for (let h = 0; h < 5; h++) ips.push(p + hex() + ':' + hex()); }
  for (let k = 0; k < 50; k++) ips.push('100.' + (64 + pick(64)) + '.' + pick(256) + '.' + (1 + pick(254)));
  for (let k = 0; k < 30; k++) ips.push('2001:db8:' + hex() + ':' + hex() + '::' + hex());
  ips.push('127.0.0.1');
  return ips;
}
function hostileOne() {
  const s = net.connect(port, '127.0.0.1');
  sent++;
  let text = '';
  s.on('connect', () => s.write('GET / HTTP/1.1\\r\\nHost: rated\\r\\nX-IP: ' + hostile[pick(hostile.length)] + '\\r\\n\\r\\n'));
  s.on('data', (d) => { text += d.toString('latin1'); });
  s.on('error', () => undefined);
  s.on('close', () => { if (text.startsWith('HTTP/1.1 ')) { answered++; if (text.startsWith('HTTP/1.1 400')) rejected++; } });
}
function connection() {
  const s = net.connect(port, '127.0.0.1');
  s.setNoDelay(true);
  let waiting = 0, buffered = '';
  const tick = () => {
    if (stopping) return s.end();
    if (waiting > 0) return setTimeout(tick, 20);
    const ips = batch();
    waiting = ips.length;
    sent += ips.length;
    s.write(ips.map((ip) => 'GET / HTTP/1.1\\r\\nHost: rated\\r\\nX-IP: ' + ip + '\\r\\n\\r\\n').join(''));
    hostileOne();
    setTimeout(tick, 100);
  };
  s.on('data', (d) => {
    buffered += d.toString('latin1');
    const parts = buffered.split('\\r\\n\\r\\n');
    buffered = parts.pop();
    for (const p of parts) { answered++; waiting--; if (p.startsWith('HTTP/1.1 400')) rejected++; }
  });
  s.on('error', (err) => { process.stderr.write('traffic: ' + err.message + '\\n'); process.exit(1); });
  s.on('connect', tick);
}
for (let c = 0; c < 2; c++) connection();
setInterval(() => process.stdout.write(JSON.stringify({ sent, answered, rejected }) + '\\n'), 1000);
process.on('SIGTERM', () => { stopping = true; setTimeout(() => { process.stdout.write(JSON.stringify({ sent, answered, rejected, done: true }) + '\\n'); process.exit(0); }, 300); });
`;

function rssMiB(pid: number): number {
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Math.round(Number(kb) / 1024);
}

interface BlockView { ip: string; expires: string | null }

/** Runs the soak; throws an AssertionError naming what went wrong. */
export async function soak(options: SoakOptions): Promise<SoakResult> {
  const report = options.report ?? ((line: string) => process.stderr.write(`${line}\n`));
  assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first (npm run build)`);
  const dir = mkdtempSync(join(tmpdir(), 'rated-soak-'));
  let ns: Namespace | null = null;
  let rated: Rated | null = null;
  let traffic: ReturnType<typeof spawn> | null = null;
  try {
    ns = await createNamespace('rtd-soak');
    const socket = join(dir, 'rated.sock');
    const config = join(dir, 'rated.yml');
    writeFileSync(config, [
      `receivers: { http: { address: 127.0.0.1, port: ${PORT} }, udp: null }`,
      'rules:',
      '  - { name: burst, limit: 20, window: 10s, block: 5s }',
      '  - { name: steady, limit: 100, window: 60s, block: 10s }',
      `escalation: { factor: 2, max: ${LONGEST_BLOCK_MS / 1000}s, memory: 60s }`,
      'tracking: { maxClients: 5000 }',
      'firewall: { backend: nftables, checkInterval: 5s }',
      `control: { socket: ${socket} }`,
      `state: { dir: ${join(dir, 'state')} }`,
      '',
    ].join('\n'));
    rated = await startRated({ namespace: ns, config, socket });
    const daemon = rated;
    const rssStart = rssMiB(daemon.pid);
    report(`soak: ${options.seconds} s; rated pid ${daemon.pid}, RSS ${rssStart} MiB at start`);

    const progress = { sent: 0, answered: 0, rejected: 0 };
    traffic = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e', TRAFFIC, String(PORT)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let trafficErr = '';
    traffic.stderr?.setEncoding('utf8').on('data', (s: string) => { trafficErr += s; });
    createInterface({ input: traffic.stdout! }).on('line', (line) => Object.assign(progress, JSON.parse(line) as typeof progress));
    const trafficDone = new Promise<number | null>((resolve) => traffic?.once('close', (code) => resolve(code)));

    const started = Date.now();
    const end = started + options.seconds * 1000;
    const warmAt = started + options.seconds * 200;
    let rssWarm = 0;
    let rssMax = rssStart;
    let maxActive = 0;
    let maxTracked = 0;
    let checks = 0;
    const problems = (): LogLine[] => daemon.lines.filter((l) => (l.level ?? 0) >= 50 || ((l.level ?? 0) >= 40 && l.msg !== 'notification rejected'));
    while (Date.now() < end) {
      await new Promise((resolve) => { setTimeout(resolve, Math.min(5000, Math.max(0, end - Date.now()))); });
      assert.equal(daemon.hasExited(), false, `the daemon died:\n${daemon.output(30)}`);
      assert.equal(traffic.exitCode, null, `the traffic generator stopped: ${trafficErr}`);
      const rss = rssMiB(daemon.pid);
      rssMax = Math.max(rssMax, rss);
      if (rssWarm === 0 && Date.now() >= warmAt) rssWarm = rss;
      const status = (await callApi(socket, 'GET', '/status')).body as { activeBlocks: number; trackedClients: number };
      maxActive = Math.max(maxActive, status.activeBlocks);
      maxTracked = Math.max(maxTracked, status.trackedClients);
      // No block outlives its time in the list by more than the sweep's second (and a margin for this check).
      const now = Date.now();
      const blocks = (await callApi(socket, 'GET', '/blocks')).body as BlockView[];
      const overdue = blocks.filter((b) => b.expires !== null && Date.parse(b.expires) < now - 3000);
      assert.deepEqual(overdue, [], 'every expired block is lifted');
      assert.deepEqual(problems(), [], 'nothing logged as an error, and no warning but rejected notifications');
      checks++;
      report(`soak: ${Math.round((now - started) / 1000)} s, ${progress.answered} notifications, ${status.activeBlocks} blocks, ${status.trackedClients} clients, RSS ${rss} MiB`);
    }
    traffic.kill('SIGTERM');
    await trafficDone;
    traffic = null;

    // The same blocks in rated list and in the kernel: compared while nothing changes them but expiry.
    const kernel = await kernelSets(ns);
    const listed = (await callApi(socket, 'GET', '/blocks')).body as BlockView[];
    const soon = new Set(listed.filter((b) => b.expires !== null && Date.parse(b.expires) < Date.now() + 2000).map((b) => b.ip));
    const kernelIps = [...kernel.v4, ...kernel.v6].filter((ip) => !soon.has(ip)).sort();
    const listedIps = listed.map((b) => b.ip).filter((ip) => !soon.has(ip)).sort();
    assert.deepEqual(listedIps, kernelIps, 'rated list agrees with the kernel');
    // With no traffic, every block ends within the longest block time, in both.
    await waitFor(async () => {
      const k = await kernelSets(ns as Namespace);
      const l = (await callApi(socket, 'GET', '/blocks')).body as BlockView[];
      return k.v4.length + k.v6.length === 0 && l.length === 0;
    }, { timeoutMs: LONGEST_BLOCK_MS + 5000, intervalMs: 500, what: 'every block to be lifted in the kernel and in rated list' });
    assert.deepEqual(problems(), [], 'nothing logged as an error, and no warning but rejected notifications');

    const rssEnd = rssMiB(daemon.pid);
    const metrics = (await callApi(socket, 'GET', '/metrics')).text;
    const sum = (name: string): number => metrics.split('\n').filter((l) => l.startsWith(name)).reduce((acc, l) => acc + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    const result: SoakResult = {
      seconds: options.seconds,
      notifications: progress.answered,
      rejected: progress.rejected,
      blocks: sum('rated_blocks_total'),
      expired: sum('rated_unblocks_total{cause="expired"}'),
      rssStartMiB: rssStart,
      rssEndMiB: rssEnd,
      rssMaxMiB: Math.max(rssMax, rssEnd),
      rssWarmMiB: rssWarm || rssStart,
      maxActiveBlocks: maxActive,
      maxTrackedClients: maxTracked,
    };
    report(`soak: done after ${checks} checks: ${JSON.stringify(result)}`);
    assert.ok(result.notifications > options.seconds * 500, `traffic flowed: ${result.notifications} notifications`);
    assert.ok(result.blocks > 20 && result.expired > 20, `blocks were made and expired continually: ${result.blocks} blocks, ${result.expired} expiries`);
    assert.ok(result.maxTrackedClients <= 5000, 'tracked clients stay within tracking.maxClients');
    // Memory levels off: once warm, it may grow by GC slack, never by what the traffic adds up to.
    assert.ok(result.rssMaxMiB <= result.rssWarmMiB + 96, `RSS stays within 96 MiB of its warm level: warm ${result.rssWarmMiB}, max ${result.rssMaxMiB} MiB`);
    return result;
  } finally {
    traffic?.kill('SIGTERM');
    await rated?.stop();
    await ns?.delete();
    rmSync(dir, { recursive: true, force: true });
  }
}

function minutesFromArgs(argv: readonly string[]): number {
  const i = argv.indexOf('--minutes');
  const value = i >= 0 ? Number(argv[i + 1]) : 10;
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--minutes: expected a positive number, got ${JSON.stringify(argv[i + 1])}`);
  return value;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    await soak({ seconds: Math.round(minutesFromArgs(process.argv.slice(2)) * 60) });
    process.exit(0);
  } catch (err) {
    process.stderr.write(`soak failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
}
