import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../../src/config/load.js';
import { parseRedisUrl, redactUrl } from '../../../src/redis-url.js';

test('redis URLs: host, port, database, credentials and TLS', () => {
  assert.deepEqual(parseRedisUrl('redis://127.0.0.1:6380/2'), { host: '127.0.0.1', port: 6380, username: undefined, password: undefined, db: 2, tls: false });
  assert.deepEqual(parseRedisUrl('rediss://user:p%40ss@cache.example:6379'), { host: 'cache.example', port: 6379, username: 'user', password: 'p@ss', db: 0, tls: true });
  assert.deepEqual(parseRedisUrl('redis://[2001:db8::1]'), { host: '2001:db8::1', port: 6379, username: undefined, password: undefined, db: 0, tls: false });
  for (const bad of ['http://127.0.0.1:6379', 'redis://', '127.0.0.1:6379', 'redis://h:6379/x', 'redis://h:6379/0?x=1', 'redis://h:99999', '']) {
    assert.equal(parseRedisUrl(bad), null, bad);
  }
});

test('passwords never show in a redacted URL', () => {
  assert.equal(redactUrl('redis://:secret@10.0.0.1:6379/0'), 'redis://:***@10.0.0.1:6379/0');
  assert.equal(redactUrl('redis://u:secret@h'), 'redis://u:***@h');
  assert.equal(redactUrl('redis://h:6379'), 'redis://h:6379');
});

test('the redis section: one server or a cluster, with defaults', () => {
  const one = parseConfig({ redis: { url: 'redis://127.0.0.1:6379/0' } }).redis;
  assert.deepEqual(one, { url: 'redis://127.0.0.1:6379/0', prefix: 'rated:', timeout: 500, syncInterval: 30_000 });
  const cluster = parseConfig({ redis: { cluster: ['redis://10.0.0.1:7000', 'redis://10.0.0.2:7000'], prefix: 'web:', timeout: '2s' } }).redis;
  assert.deepEqual(cluster, { cluster: ['redis://10.0.0.1:7000', 'redis://10.0.0.2:7000'], prefix: 'web:', timeout: 2000, syncInterval: 30_000 });
  assert.equal(parseConfig({}).redis, null);
});

test('redis errors name the key and exit 2', () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ redis: { url: 'http://127.0.0.1' } }, /^redis\.url: expected a URL like redis:\/\/127\.0\.0\.1:6379\/0 .*got "http:\/\/127\.0\.0\.1"$/],
    [{ redis: { url: 'redis://h', cluster: ['redis://h:7000'] } }, /^redis: set exactly one of url and cluster$/],
    [{ redis: {} }, /^redis: set exactly one of url and cluster$/],
    [{ redis: { cluster: ['redis://h:7000/1'] } }, /^redis\.cluster\[0\]: .*database 0 only/],
    [{ redis: { cluster: [] } }, /^redis\.cluster: /],
    [{ redis: { url: 'redis://h', prefix: 'a{b}' } }, /^redis\.prefix: .*braces/],
    [{ redis: { url: 'redis://h', prefix: '' } }, /^redis\.prefix: /],
    [{ redis: { url: 'redis://h', timeout: 'soon' } }, /^redis\.timeout: expected a duration/],
    [{ redis: { url: 'redis://h', password: 'x' } }, /^redis\.password: unknown key$/],
  ];
  for (const [raw, expected] of cases) {
    assert.throws(() => parseConfig(raw), (err: unknown) => {
      const e = err as { code?: string; exitCode?: number; message: string };
      assert.equal(e.code, 'CONFIG');
      assert.equal(e.exitCode, 2);
      assert.match(e.message, expected);
      return true;
    }, JSON.stringify(raw));
  }
});
