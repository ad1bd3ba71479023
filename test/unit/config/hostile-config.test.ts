// Hostile configuration files: every value that could reach a firewall
// command, a socket or a timer is refused with a CONFIG error (exit 2) that
// names its key, and no document can exhaust memory or the stack on load.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigText } from '../../../src/config/load.js';
import { RatedError } from '../../../src/errors.js';

const laughs = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
  .concat('bcdefghi'.split('').map((k, i) => `${k}: &${k} [${Array<string>(10).fill(`*${'abcdefghi'[i] ?? ''}`).join(',')}]`))
  .join('\n');

/** [what, YAML text, expected message (starts with the key path)] */
const CASES: ReadonlyArray<readonly [string, string, RegExp]> = [
  ['allow: a legacy form', 'allow: ["010.1.1.1"]\n', /^allow\[0\]: /],
  ['allow: an integer address', 'allow: [2130706433]\n', /^allow\[0\]: /],
  ['allow: a host name', 'allow: [localhost]\n', /^allow\[0\]: /],
  ['allow: a zone id', 'allow: ["fe80::1%lo"]\n', /^allow\[0\]: /],
  ['allow: nft syntax', 'allow: ["127.0.0.1 } ; flush ruleset"]\n', /^allow\[0\]: /],
  ['allow: a comma list', 'allow: ["127.0.0.1,10.0.0.1"]\n', /^allow\[0\]: /],
  ['allow: not a list', 'allow: 127.0.0.1\n', /^allow: /],
  ['listen on a host name', 'receivers: { http: { address: localhost } }\n', /^receivers\.http\.address: /],
  ['listen on a network', 'receivers: { http: { address: 127.0.0.0/8 } }\n', /^receivers\.http\.address: /],
  ['listen everywhere without a token', 'receivers: { http: { address: 0.0.0.0 } }\n', /^receivers\.http\.token: /],
  ['listen on all IPv6 without a token', 'receivers: { http: { address: "::" } }\n', /^receivers\.http\.token: /],
  ['a short token', 'receivers: { http: { address: 0.0.0.0, token: abc } }\n', /^receivers\.http\.token: /],
  ['a header with CR LF', 'receivers: { http: { header: "X-IP\\r\\nX-Evil: 1" } }\n', /^receivers\.http\.header: /],
  ['a header with a colon', 'receivers: { http: { header: "X-IP: 1" } }\n', /^receivers\.http\.header: /],
  ['a port out of range', 'receivers: { http: { port: 70000 } }\n', /^receivers\.http\.port: /],
  ['a port that is text', 'receivers: { http: { port: "8080; id" } }\n', /^receivers\.http\.port: /],
  ['UDP beyond loopback', 'receivers: { udp: { address: 0.0.0.0 } }\n', /^receivers\.udp\.address: /],
  ['nft syntax as the table', 'firewall: { table: "rated; flush ruleset" }\n', /^firewall\.table: /],
  ['a table name with braces', 'firewall: { table: "rated } table" }\n', /^firewall\.table: /],
  ['a table name too long', `firewall: { table: ${'a'.repeat(40)} }\n`, /^firewall\.table: /],
  ['a backend that is a shell', 'firewall: { backend: "sh -c id" }\n', /^firewall\.backend: /],
  ['a hook that is not one', 'firewall: { hook: "input; flush ruleset" }\n', /^firewall\.hook: /],
  ['a priority out of range', 'firewall: { priority: 1000000000 }\n', /^firewall\.priority: /],
  ['a fractional priority', 'firewall: { priority: 1.5 }\n', /^firewall\.priority: /],
  ['a rule name with syntax', 'rules: [{ name: "a; drop", limit: 1, window: 1s, block: 1s }]\n', /^rules\[0\]\.name: /],
  ['limit infinite', 'rules: [{ name: a, limit: .inf, window: 1s, block: 1s }]\n', /^rules\[0\]\.limit: /],
  ['limit NaN', 'rules: [{ name: a, limit: .nan, window: 1s, block: 1s }]\n', /^rules\[0\]\.limit: /],
  ['limit negative', 'rules: [{ name: a, limit: -1, window: 1s, block: 1s }]\n', /^rules\[0\]\.limit: /],
  ['limit a string', 'rules: [{ name: a, limit: "1e3", window: 1s, block: 1s }]\n', /^rules\[0\]\.limit: /],
  ['window zero', 'rules: [{ name: a, limit: 1, window: 0s, block: 1s }]\n', /^rules\[0\]\.window: /],
  ['window negative', 'rules: [{ name: a, limit: 1, window: -5, block: 1s }]\n', /^rules\[0\]\.window: /],
  ['window fractional', 'rules: [{ name: a, limit: 1, window: 1.5, block: 1s }]\n', /^rules\[0\]\.window: /],
  ['block beyond a Date', 'rules: [{ name: a, limit: 1, window: 1s, block: 999999999w }]\n', /^rules\[0\]\.block: .*3650d/],
  ['block in seconds beyond a Date', `rules: [{ name: a, limit: 1, window: 1s, block: ${Number.MAX_SAFE_INTEGER} }]\n`, /^rules\[0\]\.block: /],
  ['escalation max beyond a Date', 'escalation: { max: 999999999w }\n', /^escalation\.max: /],
  ['escalation factor infinite', 'escalation: { factor: .inf }\n', /^escalation\.factor: /],
  ['escalation factor below 1', 'escalation: { factor: 0.5 }\n', /^escalation\.factor: /],
  ['an invalid path regex', 'rules: [{ name: a, limit: 1, window: 1s, block: 1s, match: { path: "~(" } }]\n', /^rules/],
  ['a status that is not one', 'rules: [{ name: a, limit: 1, window: 1s, block: 1s, match: { status: [999] } }]\n', /^rules\[0\]\.match\.status\[0\]: /],
  ['ipv6Prefix 0', 'ipv6Prefix: 0\n', /^ipv6Prefix: /],
  ['ipv6Prefix over 128', 'ipv6Prefix: 129\n', /^ipv6Prefix: /],
  ['maxClients beyond memory', 'tracking: { maxClients: 1000000000000 }\n', /^tracking\.maxClients: /],
  ['an empty socket path', 'control: { socket: "" }\n', /^control\.socket: /],
  ['a log level that is not one', 'log: { level: "trace; id" }\n', /^log\.level: /],
  ['an unknown key', 'firewall: { tabel: rated }\n', /^firewall\.tabel: /],
  ['__proto__ at the top', '__proto__: { polluted: true }\n', /^__proto__: /],
  ['__proto__ inside', 'log: { __proto__: { level: debug } }\n', /^log\.__proto__: /],
  ['constructor', 'constructor: { prototype: { polluted: true } }\n', /^constructor: /],
  ['a merge key', 'log: { <<: { level: debug } }\n', /^log\.<<: /],
  ['a billion laughs', `${laughs}\n`, /YAML.*alias/i],
  ['nesting 20000 deep', `x: ${'['.repeat(20_000)}${']'.repeat(20_000)}\n`, /YAML/],
  ['maps nested 5000 deep', `x: ${'{a: '.repeat(5000)}1${'}'.repeat(5000)}\n`, /YAML/],
  ['duplicate keys', 'log: { level: info }\nlog: { level: debug }\n', /YAML/],
  ['a JS function tag', 'log: !!js/function "function(){}"\n', /^log: /],
  ['a binary tag', 'log: !!binary aGVsbG8=\n', /^log/],
  ['NUL in a key', 'log:\u0000 { level: info }\n', /./],
  ['a list at the top', '- a\n- b\n', /expected a mapping of keys .* got a list/],
  ['a scalar at the top', 'hello\n', /got a string: is this rated's configuration file/],
  ['unclosed flow', 'rules: [{ name: a\n', /YAML/],
];

test('hostile configuration values are CONFIG errors that name their key', () => {
  for (const [what, text, expected] of CASES) {
    let error: unknown = null;
    try {
      parseConfigText(text, 'hostile.yml');
    } catch (err) {
      error = err;
    }
    assert.ok(error instanceof RatedError, `${what}: a RatedError, got ${String(error)}`);
    assert.equal(error.code, 'CONFIG', `${what}: code CONFIG, got ${error.code}: ${error.message}`);
    assert.equal(error.exitCode, 2, what);
    assert.match(error.message.replace(/^hostile\.yml: /, ''), expected, `${what}: ${error.message}`);
    assert.ok(!error.message.includes('\n'), `${what}: one line: ${JSON.stringify(error.message)}`);
  }
  assert.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype was polluted');
});

test('a valid file next to the hostile ones still loads, frozen', () => {
  const c = parseConfigText('rules: [{ name: a, limit: 1, window: 3650d, block: 3650d }]\n', 'ok.yml');
  assert.equal(c.rules[0]?.block, 3650 * 86_400_000);
  assert.ok(Object.isFrozen(c.rules[0]));
});

test('a file that is no configuration (/etc/shadow) is refused without repeating its content', () => {
  const shadow = 'root:$y$j9T$Wq0Hs1kZ$Zx8secretsecretsecretsecret:20228:0:99999:7:::\ndaemon:*:20228:0:99999:7:::\n';
  let message = '';
  try {
    parseConfigText(shadow, '/etc/shadow');
  } catch (err) {
    message = (err as Error).message;
  }
  assert.ok(message, 'refused');
  assert.doesNotMatch(message, /secret|\$y\$|20228/, message);
});

test('patterns that backtrack catastrophically are refused with the rule and key; linear ones pass', () => {
  const rule = (path: string): string => `rules:\n  - { name: r, limit: 5, window: 10s, block: 1m, match: { path: ${JSON.stringify(path)} } }\n`;
  for (const bad of ['~^/(a+)+$', '~^/(a*)*b', '~^/(a|aa)+$', '~^/(\\w+\\s?)*$', '~^/(.*a){2,}$', '~^/(a)\\1$']) {
    assert.throws(() => parseConfigText(rule(bad), 'x.yml'), (err: unknown) => err instanceof Error && /match\.path/.test(err.message) && /exponential/.test(err.message), bad);
  }
  for (const good of ['~^/wp-(login|admin)', '~^/api/v[0-9]+/', '~\\.(php|asp)$', '~^/(a+)$', '~^/[(]+$', '~^/(ab){3}$']) {
    assert.doesNotThrow(() => parseConfigText(rule(good), 'x.yml'), good);
  }
  assert.throws(() => parseConfigText('receivers:\n  udp: { pattern: "^(?<ip>(\\\\S+)+) " }\n', 'x.yml'), /exponential/);
});
