import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Network } from '../../../src/address.js';
import { compileRules, matches, type Hit, type Match } from '../../../src/limit/rules.js';

const ip: Network = { family: 4, value: 0xcb007101n, prefix: 32, text: '203.0.113.1' };

function rule(match: Match) {
  const [compiled] = compileRules([{ name: 'r', match, limit: 10, windowMs: 60_000, blockMs: 3_600_000 }]);
  assert.ok(compiled);
  return compiled;
}

function hit(fields: Omit<Hit, 'ip' | 'at'>): Hit {
  return { ip, at: 0, ...fields };
}

function compileError(match: Match, name = 'login'): string {
  try {
    compileRules([{ name, match, limit: 10, windowMs: 60_000, blockMs: 60_000 }]);
  } catch (err) {
    assert.ok(err instanceof Error);
    return err.message;
  }
  assert.fail('expected an error');
}

test('an empty match matches every hit, even one with no fields', () => {
  const r = rule({});
  assert.equal(matches(r, hit({})), true);
  assert.equal(matches(r, hit({ method: 'POST', status: 500, host: 'x', uri: '/y' })), true);
});

test('path prefix compares the path without its query string', () => {
  const r = rule({ path: '/login' });
  assert.equal(matches(r, hit({ uri: '/login' })), true);
  assert.equal(matches(r, hit({ uri: '/login/reset' })), true);
  assert.equal(matches(r, hit({ uri: '/login?next=/home' })), true);
  assert.equal(matches(r, hit({ uri: '/logout' })), false);
  assert.equal(matches(r, hit({ uri: '/log?in=/login' })), false);
  assert.equal(matches(r, hit({ uri: '/a/login' })), false);
  assert.equal(matches(rule({ path: '/search?' }), hit({ uri: '/search?q=1' })), false, 'the query string is never part of the path');
  assert.equal(matches(r, hit({})), false, 'no uri, no match');
});

test('path regex is tested against the whole uri, query string included', () => {
  const r = rule({ path: '~^/api/v[0-9]+/' });
  assert.equal(matches(r, hit({ uri: '/api/v2/users' })), true);
  assert.equal(matches(r, hit({ uri: '/api/vx/users' })), false);
  const q = rule({ path: '~[?&]q=' });
  assert.equal(matches(q, hit({ uri: '/search?q=x' })), true);
  assert.equal(matches(q, hit({ uri: '/search' })), false);
  assert.equal(matches(rule({ path: '~\\.php$' }), hit({ uri: '/index.PHP' })), false, 'paths are case-sensitive');
});

test('methods match in any case', () => {
  const r = rule({ methods: ['post', 'PUT'] });
  assert.equal(matches(r, hit({ method: 'POST' })), true);
  assert.equal(matches(r, hit({ method: 'PUT' })), true);
  assert.equal(matches(r, hit({ method: 'put' })), true);
  assert.equal(matches(r, hit({ method: 'GET' })), false);
  assert.equal(matches(r, hit({})), false);
});

test('status matches numbers and classes', () => {
  const r = rule({ status: [401, '403', '5xx'] });
  assert.equal(matches(r, hit({ status: 401 })), true);
  assert.equal(matches(r, hit({ status: 403 })), true);
  assert.equal(matches(r, hit({ status: 500 })), true);
  assert.equal(matches(r, hit({ status: 599 })), true);
  assert.equal(matches(r, hit({ status: 404 })), false);
  assert.equal(matches(r, hit({ status: 200 })), false);
  assert.equal(matches(r, hit({})), false, 'a status criterion needs a status');
  assert.equal(matches(rule({ status: ['4XX'] }), hit({ status: 429 })), true);
  assert.equal(matches(rule({ status: [404] }), hit({ status: 404 })), true);
});

test('host matches exactly, case-insensitively, or by regex', () => {
  const r = rule({ host: 'Example.org' });
  assert.equal(matches(r, hit({ host: 'example.org' })), true);
  assert.equal(matches(r, hit({ host: 'EXAMPLE.ORG' })), true);
  assert.equal(matches(r, hit({ host: 'www.example.org' })), false);
  assert.equal(matches(r, hit({ host: 'example.org.evil' })), false);
  assert.equal(matches(r, hit({})), false);
  const re = rule({ host: '~(^|\\.)example\\.org$' });
  assert.equal(matches(re, hit({ host: 'www.Example.org' })), true);
  assert.equal(matches(re, hit({ host: 'example.org' })), true);
  assert.equal(matches(re, hit({ host: 'badexample.org' })), false);
});

test('every criterion must match', () => {
  const r = rule({ path: '/login', methods: ['POST'], status: ['4xx'], host: 'example.org' });
  const ok = { uri: '/login', method: 'POST', status: 401, host: 'example.org' };
  assert.equal(matches(r, hit(ok)), true);
  assert.equal(matches(r, hit({ ...ok, uri: '/' })), false);
  assert.equal(matches(r, hit({ ...ok, method: 'GET' })), false);
  assert.equal(matches(r, hit({ ...ok, status: 200 })), false);
  assert.equal(matches(r, hit({ ...ok, host: 'example.com' })), false);
  assert.equal(matches(r, hit({ uri: '/login', method: 'POST', host: 'example.org' })), false, 'an absent field does not match');
});

test('compiled rules keep their limits and a window of their length', () => {
  const [r] = compileRules([{ name: 'default', match: {}, limit: 360, windowMs: 120_000, blockMs: 21_600_000 }]);
  assert.ok(r);
  assert.equal(r.name, 'default');
  assert.equal(r.limit, 360);
  assert.equal(r.windowMs, 120_000);
  assert.equal(r.blockMs, 21_600_000);
  assert.equal(r.window.windowMs, 120_000);
  assert.equal(r.all, true);
  assert.deepEqual(compileRules([]), []);
});

test('a bad regex names the rule and the pattern', () => {
  const path = compileError({ path: '~[a-' });
  assert.match(path, /^rule "login": match\.path: invalid regular expression "~\[a-": /);
  assert.match(path, /Unterminated character class/);
  const host = compileError({ host: '~(' }, 'hosts');
  assert.match(host, /^rule "hosts": match\.host: invalid regular expression "~\(": /);
  assert.throws(
    () => compileRules([{ name: 'x', match: { path: '~(' }, limit: 1, windowMs: 1, blockMs: 1 }]),
    (err: Error) => err.cause instanceof SyntaxError,
    'the cause is kept',
  );
});

test('other unusable criteria are errors that name the rule and the value', () => {
  assert.equal(compileError({ path: 'login' }), 'rule "login": match.path: expected "/prefix" or "~regex", got "login"');
  assert.equal(compileError({ status: ['4x'] }), 'rule "login": match.status: expected a status like 404 or "4xx", got "4x"');
  assert.equal(compileError({ status: [99] }), 'rule "login": match.status: expected a status like 404 or "4xx", got 99');
  assert.match(compileError({ methods: [] }), /^rule "login": match\.methods: expected at least one entry, got an empty list/);
  assert.throws(
    () => compileRules([{ name: 'z', match: {}, limit: 0, windowMs: 1000, blockMs: 1000 }]),
    { message: 'rule "z": limit: expected an integer of at least 1, got 0' },
  );
  assert.throws(
    () => compileRules([{ name: 'z', match: {}, limit: 1, windowMs: 0, blockMs: 1000 }]),
    { message: 'rule "z": window: expected a positive duration, got 0 ms' },
  );
});
