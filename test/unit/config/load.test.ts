import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EMBEDDED, loadConfig, parseConfig, parseConfigText } from '../../../src/config/load.js';
import { RatedError } from '../../../src/errors.js';

function configError(fn: () => unknown): RatedError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof RatedError, `expected a RatedError, got ${String(err)}`);
    assert.equal(err.exitCode, 2);
    assert.equal(err.code, 'CONFIG');
    assert.ok(!err.message.includes('\n'), 'one line');
    return err;
  }
  assert.fail('expected a configuration error');
}

test('embedded defaults match the documented ones', () => {
  const c = parseConfig({});
  assert.deepEqual(c.receivers.http, { address: '127.0.0.1', port: 8080, header: 'X-IP', token: null, socket: null, socketGroup: null });
  assert.deepEqual(c.receivers.udp, { address: '127.0.0.1', port: 5514, pattern: null });
  assert.deepEqual(c.rules, [{ name: 'default', match: {}, limit: 360, window: 120_000, block: 21_600_000 }]);
  assert.deepEqual(c.escalation, { factor: 2, max: 604_800_000, memory: 604_800_000 });
  assert.deepEqual(c.allow, ['127.0.0.0/8', '::1/128']);
  assert.equal(c.allowSelf, true);
  assert.equal(c.ipv6Prefix, 64);
  assert.equal(c.tracking.maxClients, 1_000_000);
  assert.deepEqual(c.firewall, { backend: 'auto', table: 'rated', hook: 'input', priority: -10, flushOnExit: false, checkInterval: 30_000, maxBlocks: 1_048_576 });
  assert.equal(c.control.socket, '/run/rated/rated.sock');
  assert.equal(c.state.dir, '/var/lib/rated');
  assert.equal(c.redis, null);
  assert.equal(c.log.level, 'info');
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.rules[0]), 'the loaded configuration is frozen');
});

test('the shipped etc/rated.yml is valid and equals the embedded defaults', () => {
  const text = readFileSync(new URL('../../../etc/rated.yml', import.meta.url), 'utf8');
  assert.deepEqual(parseConfigText(text, 'etc/rated.yml'), parseConfig({}));
});

test('durations accept 90s, 10m, 6h, 1d and plain seconds', () => {
  const c = parseConfig({ rules: [
    { name: 'a', limit: 1, window: '90s', block: '10m' },
    { name: 'b', limit: 1, window: 30, block: '1d' },
  ] });
  assert.equal(c.rules[0]?.window, 90_000);
  assert.equal(c.rules[0]?.block, 600_000);
  assert.equal(c.rules[1]?.window, 30_000);
  assert.equal(c.rules[1]?.block, 86_400_000);
});

test('errors name the key path, what was expected and what was received', () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ recievers: {} }, /^recievers: unknown key$/],
    [{ receivers: { http: { prot: 80 } } }, /^receivers\.http\.prot: unknown key$/],
    [{ rules: [{ name: 'x', limit: 'lots', window: '1s', block: '1s' }] }, /^rules\[0\]\.limit: expected number, got "lots"$/],
    [{ rules: [{ name: 'x', limit: 1, window: 'sixty', block: '1s' }] }, /^rules\[0\]\.window: expected a duration like "60s".*got "sixty"$/],
    [{ rules: [{ name: 'x', limit: 1, window: '1s', block: '1s', match: { path: '~(' } }] }, /^rules\[0\]\.match\.path|^rules: /],
    [{ allow: ['10.0.0.0/33'] }, /^allow\[0\]: expected an IP address or CIDR network, got "10\.0\.0\.0\/33"$/],
    [{ allow: ['localhost'] }, /^allow\[0\]: /],
    [{ firewall: { backend: 'pf' } }, /^firewall\.backend: expected one of "auto", "nftables", "ipset", "iptables", "dry-run", got "pf"$/],
    [{ ipv6Prefix: 200 }, /^ipv6Prefix: /],
    [{ receivers: { http: { address: '0.0.0.0' } } }, /^receivers\.http\.(address|token): /],
    [{ receivers: { http: { address: '192.0.2.1' } } }, /^receivers\.http\.token: required when/],
    [{ receivers: { udp: { address: '192.0.2.1' } } }, /^receivers\.udp\.address: must be a loopback address/],
    [{ rules: [{ name: 'a', limit: 1, window: '1s', block: '1s' }, { name: 'a', limit: 2, window: '1s', block: '1s' }] }, /^rules: rule names must be unique$/],
    [{ log: { level: 'loud' } }, /^log\.level: expected one of/],
  ];
  for (const [raw, expected] of cases) {
    const err = configError(() => parseConfig(raw));
    assert.match(err.message, expected, JSON.stringify(raw));
  }
});

test('YAML errors and files: missing file, duplicate keys, not a mapping', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rated-config-'));
  assert.match(configError(() => loadConfig(join(dir, 'none.yml'))).message, /none\.yml: no such file$/);
  const dup = join(dir, 'dup.yml');
  writeFileSync(dup, 'log:\n  level: info\nlog:\n  level: debug\n');
  assert.match(configError(() => loadConfig(dup)).message, /dup\.yml: invalid YAML/);
  const list = join(dir, 'list.yml');
  writeFileSync(list, '- a\n- b\n');
  assert.match(configError(() => loadConfig(list)).message, /expected a mapping of keys/);
});

test('search order: --config, then $RATED_CONFIG, then the embedded defaults', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rated-config-'));
  const a = join(dir, 'a.yml');
  const b = join(dir, 'b.yml');
  writeFileSync(a, 'ipv6Prefix: 48\n');
  writeFileSync(b, 'ipv6Prefix: 56\n');
  assert.equal(loadConfig(a, { RATED_CONFIG: b }).config.ipv6Prefix, 48);
  assert.equal(loadConfig(undefined, { RATED_CONFIG: b }).source, b);
  const fallback = loadConfig(undefined, {});
  assert.ok(fallback.source === EMBEDDED || fallback.source === '/etc/rated/rated.yml');
});

test('the HTTP receiver may listen on every interface, with a token', () => {
  for (const address of ['0.0.0.0', '::', '192.0.2.10']) {
    const c = parseConfig({ receivers: { http: { address, token: 'a-long-enough-token' } } });
    assert.equal(c.receivers.http?.address, address);
    assert.throws(() => parseConfig({ receivers: { http: { address } } }), /receivers\.http\.token: required/);
  }
});

test('a configuration file anyone may write, or that belongs to another user, is refused with what to do', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rated-config-'));
  const file = join(dir, 'rated.yml');
  writeFileSync(file, 'log: { level: warn }\n', { mode: 0o644 });
  assert.equal(loadConfig(file).config.log.level, 'warn');
  chmodSync(file, 0o666);
  const open = configError(() => loadConfig(file));
  assert.equal(open.exitCode, 2);
  assert.match(open.message, /every user may write this file \(mode 666\).*chmod o-w/);
  chmodSync(file, 0o644);
  if (process.getuid?.() === 0) {
    chownSync(file, 12345, 12345);
    assert.match(configError(() => loadConfig(file)).message, /owned by uid 12345, neither root nor the user running rated.*chown root/);
  }
});

test('metrics.listen: ADDRESS:PORT or null; anything else names the key', () => {
  assert.equal(parseConfig({ metrics: { listen: '127.0.0.1:9466' } }).metrics.listen, '127.0.0.1:9466');
  assert.throws(() => parseConfig({ metrics: { listen: 'localhost:9466' } }), /^RatedError: metrics\.listen: expected ADDRESS:PORT/);
});
