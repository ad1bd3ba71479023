import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { compilePattern, LineIntake, LineParser, LineSplitter, MAX_LINE, parseLogTime, type LineResult } from '../../../src/receive/line.js';
import { Metrics } from '../../../src/metrics.js';
import type { Hit } from '../../../src/receive/hit.js';

/** What a line should give: the fields read, or `ignored`/`rejected` with a reason. */
type Expected =
  | { ip: string; method?: string; status?: number; host?: string; uri?: string; time?: string }
  | { ignored: string }
  | { rejected: string };

function summary(r: LineResult): Expected {
  if (r.kind === 'ignored') return { ignored: r.reason };
  if (r.kind === 'rejected') return { rejected: r.reason };
  const l = r.line;
  const out: Record<string, unknown> = { ip: l.ip.text };
  if (l.method !== undefined) out.method = l.method;
  if (l.status !== undefined) out.status = l.status;
  if (l.host !== undefined) out.host = l.host;
  if (l.uri !== undefined) out.uri = l.uri;
  if (!Number.isNaN(l.time)) out.time = new Date(l.time).toISOString();
  return out as Expected;
}

const H = '<190>Nov 22 07:40:00 web1 nginx: ';
const COMBINED = '- - [22/Nov/2026:07:40:00 +0000] "GET /index.html?q=1 HTTP/1.1" 200 612 "-" "curl/8.0"';

// [what, line, expected]. "row N" is the row of HARDENING.md §4 the case comes from.
const DEFAULT_CASES: Array<[string, string, Expected]> = [
  // The rated format, with and without the RFC 3164 header nginx writes.
  ['rated format', '192.0.2.1 GET 200 example.org /login?x=1', { ip: '192.0.2.1', method: 'GET', status: 200, host: 'example.org', uri: '/login?x=1' }],
  ['rated format, header', `${H}192.0.2.1 POST 401 example.org /login`, { ip: '192.0.2.1', method: 'POST', status: 401, host: 'example.org', uri: '/login' }],
  ['header without hostname (nohostname)', '<190>Nov 22 07:40:00 nginx: 192.0.2.1 GET 200 h /', { ip: '192.0.2.1', method: 'GET', status: 200, host: 'h', uri: '/' }],
  ['header, day space-padded', '<190>Nov  2 07:40:00 web1 nginx: 192.0.2.1 GET 200 h /', { ip: '192.0.2.1', method: 'GET', status: 200, host: 'h', uri: '/' }],
  ['header, other tag', '<13>Nov 22 07:40:00 web1 rated_web: 192.0.2.1', { ip: '192.0.2.1' }],
  ['uri with spaces is the rest of the line', '192.0.2.1 GET 200 h /a b', { ip: '192.0.2.1', method: 'GET', status: 200, host: 'h', uri: '/a b' }],
  ['trailing CR', '192.0.2.1 GET 200 h /\r', { ip: '192.0.2.1', method: 'GET', status: 200, host: 'h', uri: '/' }],
  ['IPv6 client', '2001:DB8::1 GET 200 h /', { ip: '2001:db8::1', method: 'GET', status: 200, host: 'h', uri: '/' }],
  ['row 17: mapped IPv4 is IPv4', '::ffff:192.0.2.1 GET 200 h /', { ip: '192.0.2.1', method: 'GET', status: 200, host: 'h', uri: '/' }],
  ['address alone', '192.0.2.1', { ip: '192.0.2.1' }],
  ['other format: address first, rest unknown', '192.0.2.1 something else entirely', { ip: '192.0.2.1' }],
  ['rated format with a bad status: address only', '192.0.2.1 GET 2000 h /', { ip: '192.0.2.1' }],
  ['host "-" is no host', '192.0.2.1 GET 200 - /', { ip: '192.0.2.1', method: 'GET', status: 200, uri: '/' }],
  // Combined.
  ['combined', `192.0.2.1 ${COMBINED}`, { ip: '192.0.2.1', method: 'GET', status: 200, uri: '/index.html?q=1' }],
  ['combined, header', `${H}192.0.2.1 ${COMBINED}`, { ip: '192.0.2.1', method: 'GET', status: 200, uri: '/index.html?q=1' }],
  ['combined, remote user', '192.0.2.1 - alice [22/Nov/2026:07:40:00 +0000] "POST /a HTTP/1.1" 302 0 "-" "-"', { ip: '192.0.2.1', method: 'POST', status: 302, uri: '/a' }],
  ['combined, bad request "-"', '192.0.2.1 - - [22/Nov/2026:07:40:00 +0000] "-" 400 0 "-" "-"', { ip: '192.0.2.1', status: 400 }],
  ['row 43: an address in the request does not count', '192.0.2.1 - - [22/Nov/2026:07:40:00 +0000] "GET /?x= 6.6.6.6 HTTP/1.1" 200 1 "-" "6.6.6.6"', { ip: '192.0.2.1', method: 'GET', status: 200, uri: '/?x=' }],
  ['row 43: escaped quote in the user agent', '192.0.2.1 - - [22/Nov/2026:07:40:00 +0000] "GET / HTTP/1.1" 200 1 "-" "a\\x22 6.6.6.6 \\x22"', { ip: '192.0.2.1', method: 'GET', status: 200, uri: '/' }],
  ['row 43: address of another client later in the line', 'unknown 192.0.2.9 GET 200 h /', { rejected: 'bad-address' }],
  // Ignored and rejected.
  ['row 23: unix socket client', 'unix: GET 200 h /', { ignored: 'unix-socket' }],
  ['row 23: unix socket client, combined', `unix: ${COMBINED}`, { ignored: 'unix-socket' }],
  ['row 46: empty', '', { rejected: 'empty' }],
  ['header and nothing else', H, { rejected: 'empty' }],
  ['row 46: NUL', '192.0.2.1\0 GET 200 h /', { rejected: 'binary' }],
  ['row 46: binary', '\x01\x02\x03\xff\xfe', { rejected: 'binary' }],
  ['row 42: no PRI is no header: first field is not an address', 'Nov 22 07:40:00 web1 nginx: 192.0.2.1', { rejected: 'bad-address' }],
  ['row 42: RFC 5424 header', '<165>1 2026-11-22T07:40:00Z web1 nginx - - - 192.0.2.1', { rejected: 'bad-header' }],
  ['forged header: PRI above 191', '<999>Nov 22 07:40:00 web1 nginx: 192.0.2.1', { rejected: 'bad-header' }],
  ['forged header: bad month', '<190>Foo 22 07:40:00 web1 nginx: 192.0.2.1', { rejected: 'bad-header' }],
  ['forged header: bad time', '<190>Nov 22 7:40 web1 nginx: 192.0.2.1', { rejected: 'bad-header' }],
  ['forged header: no tag', '<190>Nov 22 07:40:00 192.0.2.1', { rejected: 'bad-header' }],
  ['forged header: unterminated PRI', '<190 192.0.2.1', { rejected: 'bad-header' }],
  ['row 5: comma list', '192.0.2.1,198.51.100.7 GET 200 h /', { rejected: 'bad-address' }],
  ['row 6: leading zero', '010.1.1.1 GET 200 h /', { rejected: 'bad-address' }],
  ['row 7: octal', '0177.0.0.1', { rejected: 'bad-address' }],
  ['row 8: hex', '0x7f.0.0.1', { rejected: 'bad-address' }],
  ['row 9: integer', '2130706433 GET 200 h /', { rejected: 'bad-address' }],
  ['row 10: short form', '1.1.1 GET 200 h /', { rejected: 'bad-address' }],
  ['row 11: trailing dot', '192.0.2.1. GET 200 h /', { rejected: 'bad-address' }],
  ['row 12: out of range', '256.1.1.1 GET 200 h /', { rejected: 'bad-address' }],
  ['row 13: hostname', 'localhost GET 200 h /', { rejected: 'bad-address' }],
  ['row 14: CIDR', '192.0.2.0/24 GET 200 h /', { rejected: 'bad-address' }],
  ['row 15: everything', '0.0.0.0/0 GET 200 h /', { rejected: 'bad-address' }],
  ['row 16: range', '192.0.2.1-192.0.2.255 GET 200 h /', { rejected: 'bad-address' }],
  ['row 20: zone id', 'fe80::1%lo GET 200 h /', { rejected: 'bad-address' }],
  ['row 21: unspecified', '0.0.0.0 GET 200 h /', { rejected: 'bad-address' }],
  ['row 21: broadcast', '255.255.255.255 GET 200 h /', { rejected: 'bad-address' }],
  ['row 21: multicast', 'ff02::1 GET 200 h /', { rejected: 'bad-address' }],
  ['row 24: leading space', ' 192.0.2.1 GET 200 h /', { rejected: 'bad-address' }],
  ['row 24: tab inside', '192.0.2.1\tGET 200 h /', { rejected: 'bad-address' }],
  ['row 25: option', '-j ACCEPT', { rejected: 'bad-address' }],
  ['row 26: nft syntax', '192.0.2.1}; delete table inet hostfw', { rejected: 'bad-address' }],
  ['row 27: shell', '$(id) GET 200 h /', { rejected: 'bad-address' }],
  ['row 28: Arabic-Indic digits', '١٩٢.٠.٢.١ GET 200 h /', { rejected: 'bad-address' }],
  ['row 29: full-width digits', '１９２.０.２.１ GET 200 h /', { rejected: 'bad-address' }],
  ['row 30: Latin-1 high byte', '192.0.2.1\xff GET 200 h /', { rejected: 'bad-address' }],
  ['row 31: 8 KiB address', `${'1'.repeat(8192)} GET 200 h /`, { rejected: 'bad-address' }],
  ['row 44: X-Forwarded-For list in the address field', '192.0.2.1, 10.0.0.1 GET 200 h /', { rejected: 'bad-address' }],
];

describe('LineParser, default formats', () => {
  const parser = new LineParser();
  for (const [what, line, expected] of DEFAULT_CASES) {
    test(what, () => {
      assert.deepEqual(summary(parser.parse(line)), expected);
    });
  }

  test('row 46: a 64 KiB line is read up to MAX_LINE and still counts by its first field', () => {
    const line = `192.0.2.1 GET 200 h /${'a'.repeat(65_000)}`;
    const r = parser.parse(line);
    assert.equal(r.kind, 'hit');
    assert.equal(r.kind === 'hit' && r.line.ip.text, '192.0.2.1');
    assert.ok(r.kind === 'hit' && (r.line.uri?.length ?? 0) <= 2048, 'the uri is bounded');
  });

  test('a 64 KiB line of garbage is rejected', () => {
    assert.deepEqual(summary(parser.parse('x'.repeat(65_507))), { rejected: 'bad-address' });
  });

  test('hostile combined lines take linear time', () => {
    const user = `- ${' ['.repeat(MAX_LINE / 2)}`;
    const t0 = performance.now();
    for (let i = 0; i < 20; i++) parser.parse(`192.0.2.1 ${user}`);
    assert.ok(performance.now() - t0 < 1000, `took ${performance.now() - t0} ms`);
  });
});

describe('LineParser with a pattern', () => {
  const pattern = '^rl1 (?<ip>\\S+) (?<method>\\S+) (?<status>\\S+) (?<host>\\S+) (?<uri>\\S+)$';
  const parser = new LineParser({ pattern });
  const cases: Array<[string, string, Expected]> = [
    ['row 41: the anchored grammar', '<190>Nov 22 07:40:00 web ratelimit: rl1 192.0.2.1 GET 200 h /x', { ip: '192.0.2.1', method: 'GET', status: 200, host: 'h', uri: '/x' }],
    ['no header', 'rl1 192.0.2.1 GET 200 h /x', { ip: '192.0.2.1', method: 'GET', status: 200, host: 'h', uri: '/x' }],
    ['not matching', 'rl2 192.0.2.1 GET 200 h /x', { rejected: 'no-match' }],
    ['bad address in the group', 'rl1 010.1.1.1 GET 200 h /x', { rejected: 'bad-address' }],
    ['unix: in the group', 'rl1 unix: GET 200 h /x', { ignored: 'unix-socket' }],
    ['bad method and status are left out', 'rl1 192.0.2.1 get! 9999 h /x', { ip: '192.0.2.1', host: 'h', uri: '/x' }],
  ];
  for (const [what, line, expected] of cases) {
    test(what, () => {
      assert.deepEqual(summary(parser.parse(line)), expected);
    });
  }

  test('a pattern without an ip group is refused', () => {
    assert.throws(() => compilePattern('^(?<addr>\\S+)'), /named group "ip"/);
  });

  test('a global pattern keeps no state between lines', () => {
    const p = new LineParser({ pattern: /^(?<ip>\S+)/g });
    for (let i = 0; i < 3; i++) assert.deepEqual(summary(p.parse('192.0.2.1 x')), { ip: '192.0.2.1' });
  });
});

describe('LineParser with time (replay)', () => {
  const parser = new LineParser({ time: true });
  const cases: Array<[string, string, Expected]> = [
    ['combined time with offset', '192.0.2.1 - - [22/Nov/2026:08:40:00 +0100] "GET / HTTP/1.1" 200 1 "-" "-"', { ip: '192.0.2.1', method: 'GET', status: 200, uri: '/', time: '2026-11-22T07:40:00.000Z' }],
    ['rated format has no time', '192.0.2.1 GET 200 h /', { rejected: 'no-time' }],
    ['impossible date', '192.0.2.1 - - [31/Feb/2026:08:40:00 +0000] "GET / HTTP/1.1" 200 1 "-" "-"', { rejected: 'bad-time' }],
  ];
  for (const [what, line, expected] of cases) {
    test(what, () => {
      assert.deepEqual(summary(parser.parse(line)), expected);
    });
  }

  test('parseLogTime reads $time_local, $time_iso8601 and $msec', () => {
    const at = Date.UTC(2026, 10, 22, 7, 40, 0);
    assert.equal(parseLogTime('22/Nov/2026:07:40:00 +0000'), at);
    assert.equal(parseLogTime('21/Nov/2026:23:40:00 -0800'), at);
    assert.equal(parseLogTime('2026-11-22T08:40:00+01:00'), at);
    assert.equal(parseLogTime('2026-11-22T07:40:00Z'), at);
    assert.equal(parseLogTime('2026-11-22T07:40:00.250Z'), at + 250);
    assert.equal(parseLogTime(`${at / 1000}.125`), at + 125);
    for (const bad of ['', 'yesterday', '22/Foo/2026:07:40:00 +0000', '22/Nov/2026:25:40:00 +0000', '2026-13-01T00:00:00Z', '12']) {
      assert.ok(Number.isNaN(parseLogTime(bad)), bad);
    }
  });
});

describe('LineSplitter', () => {
  function split(chunks: readonly string[], max?: number): { lines: string[]; rest: string | null } {
    const lines: string[] = [];
    const s = new LineSplitter((l) => lines.push(l), max);
    for (const c of chunks) s.push(Buffer.from(c, 'latin1'));
    return { lines, rest: s.flush() };
  }

  test('lines across chunks; the partial last line waits for its newline', () => {
    assert.deepEqual(split(['a\nb', 'c\n', 'd']), { lines: ['a', 'bc'], rest: 'd' });
    assert.deepEqual(split(['a\n\nb\n']), { lines: ['a', '', 'b'], rest: null });
    assert.deepEqual(split(['ab', 'cd', 'ef\n']), { lines: ['abcdef'], rest: null });
  });

  test('a line longer than max is cut, whether in one chunk or many', () => {
    assert.deepEqual(split(['abcdefgh\nxy\n'], 4), { lines: ['abcd', 'xy'], rest: null });
    assert.deepEqual(split(['ab', 'cdef', 'gh', 'ij\nk'], 4), { lines: ['abcd'], rest: 'k' });
  });

  test('bytes are read one char each (Latin-1)', () => {
    const lines: string[] = [];
    new LineSplitter((l) => lines.push(l)).push(Buffer.from([0xef, 0xbc, 0x91, 10]));
    assert.deepEqual(lines, ['\xef\xbc\x91']);
  });
});

describe('LineIntake', () => {
  test('counts received, rejected per reason and ignored, and hands hits to the sink', () => {
    const metrics = new Metrics({ activeBlocks: () => 0, trackedClients: () => 0 });
    const hits: Hit[] = [];
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (s: string) => { lines.push(s); } });
    const intake = new LineIntake({
      receiver: 'udp', parser: new LineParser(), metrics, log,
      sink: (hit) => {
        hits.push(hit);
        return hit.ip.text === '127.0.0.1' ? 'allowed' : 'counted';
      },
    });
    for (const l of ['192.0.2.1 GET 200 h /', '127.0.0.1 GET 200 h /', 'unix: GET 200 h /', 'junk', 'junk2', '']) intake.line(l);
    assert.equal(metrics.received.get('udp'), 2);
    assert.equal(metrics.rejected.get('udp\tbad-address'), 2);
    assert.equal(metrics.rejected.get('udp\tempty'), 1);
    assert.equal(metrics.ignored.get('udp\tunix-socket'), 1);
    assert.equal(metrics.ignored.get('udp\tallow-list'), 1);
    assert.deepEqual(hits.map((h) => [h.ip.text, h.method, h.status, h.host, h.uri]), [
      ['192.0.2.1', 'GET', 200, 'h', '/'], ['127.0.0.1', 'GET', 200, 'h', '/'],
    ]);
    // One warning per reason within the interval, whatever the flood.
    assert.equal(lines.filter((l) => l.includes('bad-address')).length, 1);
  });
});

describe('receiver configuration', () => {
  test('receivers.udp.pattern needs a group ip; receivers.files need absolute paths', async () => {
    const { parseConfig } = await import('../../../src/config/load.js');
    assert.throws(() => parseConfig({ receivers: { udp: { pattern: '^(?<addr>\\S+)' } } }), /receivers\.udp\.pattern: .*named group "ip"/);
    assert.throws(() => parseConfig({ receivers: { udp: { pattern: '(?<ip>[' } } }), /receivers\.udp\.pattern: expected a regular expression/);
    assert.throws(() => parseConfig({ receivers: { files: ['access.log'] } }), /receivers\.files\[0\]: expected an absolute path/);
    const ok = parseConfig({ receivers: { udp: { pattern: '^(?<ip>\\S+)' }, files: ['/var/log/nginx/access.log'] } });
    assert.deepEqual(ok.receivers.files, ['/var/log/nginx/access.log']);
  });
});
