import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { networkInterfaces } from 'node:os';
import { parseAddress } from '../../../src/address.js';
import { RatedError } from '../../../src/errors.js';
import { AllowList } from '../../../src/limit/allow.js';
import { net } from '../../helpers/net.js';


describe('AllowList', () => {
  const defaults = AllowList.fromConfig(['127.0.0.0/8', '::1/128'], false);

  // These must never be blocked, whatever refactor comes next.
  for (const text of ['127.0.0.1', '127.255.255.254', '::1']) {
    test(`refuses loopback ${text}`, () => {
      assert.equal(defaults.has(net(text)), true);
    });
  }

  test('refuses ::ffff:127.0.0.1 once parsed', () => {
    const mapped = parseAddress('::ffff:127.0.0.1');
    assert.ok(mapped);
    assert.equal(mapped.text, '127.0.0.1');
    assert.equal(defaults.has(mapped), true);
  });

  test('refuses networks that overlap an entry, whichever contains the other', () => {
    for (const text of ['127.0.0.0/16', '127.0.0.1/32', '126.0.0.0/7', '0.0.0.0/0', '::/0', '::/64', '::1/128']) {
      assert.equal(defaults.has(net(text)), true, text);
    }
    const list = AllowList.fromConfig(['192.0.2.0/24'], false);
    assert.equal(list.has(net('192.0.2.200')), true);
    assert.equal(list.has(net('192.0.2.128/25')), true);
    assert.equal(list.has(net('192.0.0.0/16')), true);
    assert.equal(list.has(net('192.0.3.0/24')), false);
    assert.equal(list.has(net('192.0.1.255')), false);
  });

  test('allows unrelated addresses and networks', () => {
    for (const text of ['203.0.113.7', '128.0.0.1', '198.51.100.0/24', '::2', '2001:db8::1', '2001:db8::/32', '::ffff:203.0.113.7']) {
      assert.equal(defaults.has(net(text)), false, text);
    }
  });

  test('keeps the families apart', () => {
    const list = new AllowList([net('0.0.0.0/0')]);
    assert.equal(list.has(net('2001:db8::1')), false);
    assert.equal(list.has(net('203.0.113.7')), true);
  });

  test('holds canonical entries without duplicates', () => {
    const list = AllowList.fromConfig(['192.0.2.9/24', '192.0.2.0/24', '::FFFF:10.0.0.1', ' 2001:DB8::/32'], false);
    assert.deepEqual(list.entries.map((n) => n.text), ['192.0.2.0/24', '10.0.0.1', '2001:db8::/32']);
    assert.ok(Object.isFrozen(list.entries));
  });

  test('an empty list refuses nothing', () => {
    const list = AllowList.fromConfig([], false);
    assert.equal(list.has(net('127.0.0.1')), false);
    assert.equal(list.has(net('0.0.0.0/0')), false);
  });

  test('allowSelf adds loopback and every interface address, each on its own', () => {
    const list = AllowList.fromConfig([], true);
    assert.equal(list.has(net('127.0.0.1')), true);
    assert.equal(list.has(net('::1')), true);
    for (const info of Object.values(networkInterfaces()).flat()) {
      const own = info ? parseAddress(info.address) : null;
      if (own) assert.equal(list.has(own), true, own.text);
    }
    for (const n of list.entries) assert.equal(n.prefix, n.family === 4 ? 32 : 128, n.text);
    assert.equal(list.has(net('127.0.0.2')), false);
  });

  test('a bad entry throws a configuration error that names it', () => {
    for (const bad of ['010.1.1.1', 'localhost', '10.0.0.0/33', '0.0.0.0', '']) {
      assert.throws(() => AllowList.fromConfig(['10.0.0.0/8', bad], false), (err: unknown) => {
        assert.ok(err instanceof RatedError);
        assert.equal(err.code, 'CONFIG');
        assert.ok(err.message.startsWith('allow[1]: '), err.message);
        assert.ok(err.message.includes(JSON.stringify(bad)), err.message);
        return true;
      });
    }
  });
});
