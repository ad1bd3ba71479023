import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../src/config/load.js';
import { Replay } from '../../src/replay.js';

const T0 = Date.UTC(2026, 10, 22, 10, 0, 0);
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** nginx's $time_local, in UTC. */
function timeLocal(ms: number): string {
  const d = new Date(ms);
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${p(d.getUTCDate())}/${MONTHS[d.getUTCMonth()] ?? ''}/${d.getUTCFullYear()}:${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

function combined(ip: string, ms: number, method = 'GET', uri = '/', status = 200): string {
  return `${ip} - - [${timeLocal(ms)}] "${method} ${uri} HTTP/1.1" ${status} 12 "-" "test"`;
}

const config = parseConfig({
  rules: [
    { name: 'flood', limit: 10, window: '10s', block: '1m' },
    { name: 'login', match: { path: '/login', methods: ['POST'] }, limit: 3, window: '60s', block: '5m' },
  ],
  escalation: { factor: 2, max: '1h', memory: '1h' },
  allow: ['127.0.0.0/8', '::1/128', '198.51.100.0/24'],
});

function run(lines: readonly string[], pattern: string | null = null) {
  const r = new Replay({ config, pattern });
  lines.forEach((l, i) => r.line(l, 'test.log', i + 1));
  return r.finish();
}

describe('Replay', () => {
  test('lists exactly the offenders, with rule, log time, duration, and escalation', () => {
    const lines: string[] = [];
    // A steady client at 83% of the limit for two minutes: never blocked.
    for (let s = 0; s < 100; s++) lines.push(combined('192.0.2.10', T0 + s * 1200));
    // A burst of 11 within a second at t=5s: blocked by flood on its 11th line.
    for (let i = 0; i < 11; i++) lines.push(combined('203.0.113.7', T0 + 5000 + i * 50));
    // Its requests during the block (1m) are not counted; 2 minutes later a second burst: blocked for 2m.
    for (let i = 0; i < 11; i++) lines.push(combined('203.0.113.7', T0 + 125_000 + i * 50));
    // Four POSTs to /login within a minute: blocked by login (5m).
    for (let i = 0; i < 4; i++) lines.push(combined('203.0.113.8', T0 + 10_000 + i * 10_000, 'POST', '/login'));
    // An allow-listed flood is never blocked.
    for (let i = 0; i < 50; i++) lines.push(combined('198.51.100.5', T0 + 6000 + i * 10));
    // An IPv6 client spread over one /64 is blocked as the /64.
    for (let i = 0; i < 11; i++) lines.push(combined(`2001:db8:1::${i + 1}`, T0 + 7000 + i * 10));
    // Garbage.
    lines.push('not a log line', '', 'unix: - - [22/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "-"');
    lines.sort((a, b) => timeOf(a) - timeOf(b));

    const { blocks, summary } = run(lines);
    assert.deepEqual(blocks.map((b) => [b.ip, b.rule, new Date(b.since).toISOString(), b.durationMs, b.offence, b.hits]), [
      ['203.0.113.7', 'flood', new Date(T0 + 5000).toISOString(), 60_000, 1, 11],
      ['2001:db8:1::/64', 'flood', new Date(T0 + 7000).toISOString(), 60_000, 1, 11],
      ['203.0.113.8', 'login', new Date(T0 + 40_000).toISOString(), 300_000, 1, 4],
      ['203.0.113.7', 'flood', new Date(T0 + 125_000).toISOString(), 120_000, 2, 11],
    ]);
    const first = blocks[0];
    assert.ok(first);
    assert.equal(first.expires - first.since, first.durationMs);
    assert.equal(first.reason, '11 requests in 10s');
    assert.equal(first.file, 'test.log');
    assert.match(lines[first.line - 1] ?? '', /^203\.0\.113\.7 /, 'the line number points at the offender');
    assert.equal(summary.lines, lines.length);
    assert.equal(summary.rejected, 2);
    assert.deepEqual(summary.rejectedByReason, { 'bad-address': 1, empty: 1 });
    assert.equal(summary.ignored, 51, 'the allow-listed flood and the unix client');
    assert.equal(summary.clients, 5, '192.0.2.10, two offenders, the allow-listed client, one /64');
    assert.equal(summary.blocks, 4);
    assert.equal(summary.blockedClients, 3);
    assert.equal(summary.from, T0);
  });

  test('a custom pattern with $time_iso8601', () => {
    const lines = Array.from({ length: 11 }, (_, i) => `rl 203.0.113.7 ${new Date(T0 + i).toISOString()}`);
    const { blocks } = run(lines, '^rl (?<ip>\\S+) (?<time>\\S+)$');
    assert.deepEqual(blocks.map((b) => [b.ip, b.since]), [['203.0.113.7', T0 + 10]]);
  });

  test('lines without a time are rejected, not counted at some other time', () => {
    const { blocks, summary } = run(Array.from({ length: 20 }, () => '203.0.113.7 GET 200 h /'));
    assert.deepEqual(blocks, []);
    assert.deepEqual(summary.rejectedByReason, { 'no-time': 20 });
  });

  test('logs out of order are noticed', () => {
    const { summary } = run([combined('192.0.2.1', T0 + 3_600_000), combined('192.0.2.1', T0)]);
    assert.equal(summary.outOfOrder, 1);
  });
});

function timeOf(line: string): number {
  const m = /\[(\d\d)\/(\w{3})\/(\d{4}):(\d\d):(\d\d):(\d\d) \+0000\]/.exec(line);
  if (!m) return 0;
  return Date.UTC(Number(m[3]), MONTHS.indexOf(m[2] ?? ''), Number(m[1]), Number(m[4]), Number(m[5]), Number(m[6]));
}

test('lines nginx wrote in completion order are counted at their own time', () => {
  // A burst of 4 requests within 10 s, logged with a slow one (its line written 50 s later) in between:
  // counted at the latest time read, the burst would be spread over 60 s.
  const lines = [
    combined('192.0.2.9', T0), combined('192.0.2.9', T0 + 2_000),
    combined('198.51.100.1', T0 + 60_000),
    combined('192.0.2.9', T0 + 5_000), combined('192.0.2.9', T0 + 9_000),
  ];
  const r = new Replay({ config: parseConfig({ rules: [{ name: 'burst', limit: 3, window: '10s', block: '1m' }], allow: [] }), pattern: null });
  lines.forEach((l, i) => r.line(l, 'test.log', i + 1));
  const { blocks, summary } = r.finish();
  assert.equal(summary.reordered, 2);
  assert.equal(summary.outOfOrder, 0);
  assert.deepEqual(blocks.map((b) => [b.ip, b.since, b.line]), [['192.0.2.9', T0 + 9_000, 5]], 'blocked at the time, and the line, that crossed the limit');
  assert.equal(summary.from, T0);
  assert.equal(summary.to, T0 + 60_000);
});
