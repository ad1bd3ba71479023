// `rated replay` as users run it (the built CLI, no root), on a generated
// combined log with known offenders; then the daemon fed the same lines
// through its file receiver blocks the same clients.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { execa } from 'execa';
import { callApi } from '../../src/control/client.js';
import { createNamespace, type Namespace } from '../helpers/netns.js';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { BIN, MAIN_JS, ROOT, startRated, type Rated } from '../helpers/rated.js';
import { waitFor } from '../helpers/wait-for.js';

const T0 = Date.UTC(2026, 10, 22, 10, 0, 0);
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

function timeLocal(ms: number): string {
  // In +0100, to exercise the offset.
  const d = new Date(ms + 3_600_000);
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${p(d.getUTCDate())}/${MONTHS[d.getUTCMonth()] ?? ''}/${d.getUTCFullYear()}:${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0100`;
}

function combined(ip: string, ms: number, method = 'GET', uri = '/', status = 200): string {
  return `${ip} - - [${timeLocal(ms)}] "${method} ${uri} HTTP/1.1" ${status} 512 "https://example.org/" "Mozilla/5.0 (X11; Linux x86_64)"`;
}

const CONFIG = [
  'receivers: { http: null, udp: null }',
  'rules:',
  '  - { name: default, limit: 20, window: 60s, block: 1h }',
  '  - { name: login, match: { path: /login, methods: [POST] }, limit: 5, window: 60s, block: 10m }',
  'allow: [127.0.0.0/8, "::1/128", 198.51.100.7]',
  '',
].join('\n');

/**
 * The offenders, each with the rule, the log time of the line that crosses
 * the limit ($time_local has whole seconds), and the block length.
 */
const OFFENDERS = [
  { ip: '2001:db8:5::/64', rule: 'default', since: T0 + 600_000, duration: '1h' },
  { ip: '203.0.113.7', rule: 'default', since: T0 + 1_200_000, duration: '1h' },
  { ip: '203.0.113.8', rule: 'login', since: T0 + 1_800_000 + 5 * 5000, duration: '10m' },
];

/** A combined log of an hour: 50 ordinary clients, an allow-listed flood, three offenders, some garbage. */
function generate(): { text: string; lines: number; valid: number } {
  const entries: Array<[number, string]> = [];
  for (let c = 0; c < 50; c++) {
    for (let i = 0; i < 10; i++) entries.push([T0 + c * 1000 + i * 300_000, combined(`192.0.2.${c + 1}`, T0 + c * 1000 + i * 300_000, 'GET', `/page/${i}`)]);
  }
  for (let i = 0; i < 100; i++) entries.push([T0 + 300_000 + i * 10, combined('198.51.100.7', T0 + 300_000 + i * 10)]);
  for (let i = 0; i < 21; i++) entries.push([T0 + 600_000 + i * 20, combined(`2001:db8:5::${(i % 5) + 1}`, T0 + 600_000 + i * 20)]);
  for (let i = 0; i < 21; i++) entries.push([T0 + 1_200_000 + i * 30, combined('203.0.113.7', T0 + 1_200_000 + i * 30, 'GET', `/search?q=${i}`)]);
  for (let i = 0; i < 6; i++) entries.push([T0 + 1_800_000 + i * 5000, combined('203.0.113.8', T0 + 1_800_000 + i * 5000, 'POST', '/login', 401)]);
  entries.sort((a, b) => a[0] - b[0]);
  const lines = entries.map((e) => e[1]);
  const valid = lines.length;
  lines.splice(100, 0, 'this is not a log line', `unix: - - [${timeLocal(T0)}] "GET / HTTP/1.1" 200 1 "-" "-"`);
  return { text: `${lines.join('\n')}\n`, lines: lines.length, valid };
}

interface ReplayJson {
  blocks: Array<Record<string, unknown>>;
  summary: Record<string, unknown>;
}

const NO_STACK = /\n\s+at /;

describe('rated replay', () => {
  let dir = '';
  let config = '';
  let plain = '';
  let gz = '';
  const log = generate();

  const replay = (args: readonly string[], input?: Buffer | string) => execa(process.execPath, [BIN, 'replay', '-c', config, ...args], {
    reject: false, cwd: ROOT, timeout: 30_000, input: input ?? '', stripFinalNewline: false,
  });

  before(() => {
    assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first (npm run build)`);
    dir = mkdtempSync(join(tmpdir(), 'rated-replay-'));
    config = join(dir, 'rated.yml');
    writeFileSync(config, CONFIG);
    plain = join(dir, 'access.log');
    gz = join(dir, 'access.log.1.gz');
    writeFileSync(plain, log.text);
    writeFileSync(gz, gzipSync(log.text));
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function checkJson(stdout: string, file: string): void {
    const out = JSON.parse(stdout) as ReplayJson;
    assert.deepEqual(Object.keys(out), ['blocks', 'summary']);
    assert.deepEqual(out.blocks.map((b) => [b.ip, b.rule, b.since, b.duration]),
      OFFENDERS.map((o) => [o.ip, o.rule, new Date(o.since).toISOString(), o.duration]));
    for (const b of out.blocks) {
      assert.deepEqual(Object.keys(b), ['ip', 'rule', 'reason', 'hits', 'since', 'expires', 'duration', 'durationMs', 'offence', 'file', 'line']);
      assert.equal(Date.parse(String(b.expires)) - Date.parse(String(b.since)), b.durationMs);
      assert.equal(b.offence, 1);
      assert.equal(b.file, file);
      assert.equal(typeof b.line, 'number');
      assert.match(String(b.reason), /^\d+ requests in 60s$/);
    }
    const s = out.summary;
    assert.equal(s.lines, log.lines);
    assert.equal(s.rejected, 1);
    assert.deepEqual(s.rejectedByReason, { 'bad-address': 1 });
    assert.equal(s.ignored, 101, 'the allow-listed flood and the unix client');
    assert.equal(s.clients, 54);
    assert.equal(s.blocks, 3);
    assert.equal(s.blockedClients, 3);
    assert.equal(s.from, new Date(T0).toISOString());
    assert.equal(typeof s.seconds, 'number');
  }

  test('a plain log: exactly the offenders, with rule, time and duration (--json)', async () => {
    const r = await replay(['--json', plain]);
    assert.equal(r.exitCode, 0, r.stderr);
    checkJson(r.stdout, plain);
  });

  test('a .gz log gives the same', async () => {
    const r = await replay(['--json', gz]);
    assert.equal(r.exitCode, 0, r.stderr);
    checkJson(r.stdout, gz);
  });

  test('stdin, plain and gzipped, gives the same', async () => {
    for (const input of [log.text, gzipSync(log.text)]) {
      const r = await replay(['--json', '-'], input);
      assert.equal(r.exitCode, 0, r.stderr);
      checkJson(r.stdout, '-');
    }
  });

  test('the table names each offender and ends with the summary', async () => {
    const r = await replay([plain]);
    assert.equal(r.exitCode, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^SINCE \(log time\)\s+IP\s+RULE\s+HITS\s+BLOCK\s+UNTIL\s+REASON$/);
    for (const o of OFFENDERS) {
      const row = lines.find((l) => l.includes(` ${o.ip} `));
      assert.ok(row, `a row for ${o.ip}:\n${r.stdout}`);
      assert.ok(row.startsWith(new Date(o.since).toISOString().replace('T', ' ').replace(/\.\d{3}Z$/, 'Z')), row);
      assert.match(row, new RegExp(` ${o.rule} .* ${o.duration} `));
    }
    assert.ok(lines.some((l) => l.startsWith(`${log.lines} lines read, 1 rejected, 101 ignored`) && l.includes('54 clients seen; 3 blocks of 3 clients')), r.stdout);
  });

  test('logs given newest first are replayed oldest first', async () => {
    const older = join(dir, 'older.log');
    writeFileSync(older, `${combined('192.0.2.200', T0 - 86_400_000)}\n`);
    const r = await replay(['--json', plain, older]);
    assert.equal(r.exitCode, 0, r.stderr);
    const out = JSON.parse(r.stdout) as ReplayJson;
    assert.deepEqual(out.summary.logs, [older, plain]);
    assert.equal(out.summary.outOfOrder, 0);
    assert.equal(out.blocks.length, 3);
  });

  test('--pattern reads another format; it needs groups ip and time', async () => {
    const custom = join(dir, 'custom.log');
    const lines = Array.from({ length: 21 }, (_, i) => `${new Date(T0 + i * 10).toISOString()} 203.0.113.70 GET /x`);
    writeFileSync(custom, `${lines.join('\n')}\n`);
    const r = await replay(['--json', '--pattern', '^(?<time>\\S+) (?<ip>\\S+) (?<method>\\S+) (?<uri>\\S+)$', custom]);
    assert.equal(r.exitCode, 0, r.stderr);
    const out = JSON.parse(r.stdout) as ReplayJson;
    assert.deepEqual(out.blocks.map((b) => [b.ip, b.since]), [['203.0.113.70', new Date(T0 + 200).toISOString()]]);
  });

  test('an unreadable log or a bad pattern: exit 2 with one line', async () => {
    const cases: Array<[string[], RegExp]> = [
      [[join(dir, 'missing.log')], /missing\.log: cannot read: no such file/],
      [[dir], /is a directory/],
      [['--pattern', '(?<ip>[', plain], /^rated: --pattern: invalid regular expression/],
      [['--pattern', '^(?<ip>\\S+)', plain], /^rated: --pattern: .*"time"/],
      [['--pattern', '^(?<time>\\S+)', plain], /^rated: --pattern: .*"ip"/],
    ];
    const notGz = join(dir, 'bad.gz');
    writeFileSync(notGz, Buffer.from([0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]));
    cases.push([[notGz], /bad\.gz: cannot read: invalid gzip data/]);
    // A log in another format: nothing parsed is no "no client would have been blocked".
    const other = join(dir, 'other.log');
    writeFileSync(other, Array.from({ length: 20 }, (_, i) => `2026-11-22 10:00:${String(i).padStart(2, '0')} GET / 192.0.2.${i}\n`).join(''));
    cases.push([[other], /none of the 20 lines could be read as an access log .*--pattern/]);
    for (const [args, expected] of cases) {
      const r = await replay(args);
      assert.equal(r.exitCode, 2, `${args.join(' ')}: exit 2, got ${String(r.exitCode)}: ${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line on stderr: ${r.stderr}`);
      assert.match(lines[0] ?? '', expected);
      assert.doesNotMatch(r.stderr, NO_STACK);
    }
  });

  test('a truncated .gz: the results up to the damage, and where it is', async () => {
    const whole = gzipSync(log.text);
    const cut = join(dir, 'cut.log.gz');
    writeFileSync(cut, whole.subarray(0, Math.floor(whole.length * 0.6)));
    const r = await replay(['--json', cut]);
    assert.equal(r.exitCode, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { summary: { lines: number; damaged: Array<{ log: string; afterLine: number; why: string }> } };
    assert.ok(out.summary.lines > 0 && out.summary.lines < log.lines, `some lines, not all: ${out.summary.lines} of ${log.lines}`);
    assert.deepEqual(out.summary.damaged, [{ log: cut, afterLine: out.summary.lines, why: 'unexpected end of gzip data' }]);
    assert.match(r.stderr, new RegExp(`cut\\.log\\.gz is damaged after line ${out.summary.lines} \\(unexpected end of gzip data\\)`));
  });

  test('it runs without root and touches no firewall', async () => {
    if (process.getuid?.() !== 0) return;
    // World-readable copies for the unprivileged user.
    chmodSync(dir, 0o755);
    for (const f of [config, plain]) chmodSync(f, 0o644);
    const r = await execa('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, BIN, 'replay', '-c', config, '--json', plain], {
      reject: false, cwd: ROOT, timeout: 30_000, input: '',
    });
    assert.equal(r.exitCode, 0, r.stderr);
    checkJson(r.stdout, plain);
  });
});

const TOOLS = ['ip'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;

describe('the daemon fed the same lines blocks the same clients', { skip: SKIP }, () => {
  let dir = '';
  let ns: Namespace | null = null;
  let rated: Rated | null = null;
  const log = generate();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rated-replay-daemon-'));
    ns = await createNamespace('rt-replay');
  });
  after(async () => {
    await rated?.stop();
    await ns?.delete();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('replay and a dry-run daemon following the log agree', async () => {
    assert.ok(ns);
    const logPath = join(dir, 'logs', 'access.log');
    const socket = join(dir, 'rated.sock');
    const config = join(dir, 'rated.yml');
    writeFileSync(config, CONFIG.replace('receivers: { http: null, udp: null }',
      `receivers: { http: null, udp: null, files: [${logPath}] }\ncontrol: { socket: ${socket} }\nstate: { dir: ${join(dir, 'state')} }`));
    rated = await startRated({ namespace: ns, config, socket, args: ['--dry-run'] });
    // The log appears after the daemon started, so it is read from its start.
    mkdirSync(join(dir, 'logs'));
    writeFileSync(logPath, log.text);
    await waitFor(async () => {
      const s = (await callApi(socket, 'GET', '/status')).body as { receivers: { files: { received: number; rejected: number } } };
      return s.receivers.files.received === log.valid && s.receivers.files.rejected === 1;
    }, { timeoutMs: 10_000, what: 'the daemon to read the whole log' });
    const blocks = (await callApi(socket, 'GET', '/blocks')).body as Array<{ ip: string; rule: string }>;
    const daemon = blocks.map((b) => [b.ip, b.rule]).sort();

    const r = await execa(process.execPath, [BIN, 'replay', '-c', config, '--json', logPath], { reject: false, cwd: ROOT, timeout: 30_000, input: '' });
    assert.equal(r.exitCode, 0, r.stderr);
    const replayed = (JSON.parse(r.stdout) as ReplayJson).blocks.map((b) => [b.ip, b.rule]).sort();
    assert.deepEqual(daemon, replayed);
    assert.deepEqual(replayed, OFFENDERS.map((o) => [o.ip, o.rule]).sort());
  });
});
