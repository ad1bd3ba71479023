import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SocketAddress } from 'node:net';
import fc from 'fast-check';
import { clientKey, contains, ipv4, neverAClient, overlaps, parseAddress, parseNetwork, toNetwork, type Network } from '../../src/address.js';

function address(text: string): Network {
  const n = parseAddress(text);
  assert.ok(n, `${JSON.stringify(text)} should parse`);
  return n;
}

function network(text: string): Network {
  const n = parseNetwork(text);
  assert.ok(n, `${JSON.stringify(text)} should parse`);
  return n;
}

// [input as the handler sees it, canonical text or null when rejected]
// The number is the row of HARDENING.md §4 the case comes from.
const corpus: [row: string, input: string, expected: string | null][] = [
  ['1', '192.0.2.1', '192.0.2.1'],
  ['3', '', null],
  ['4', '192.0.2.1, 127.0.0.1', null],
  ['5', '192.0.2.1,198.51.100.7', null],
  ['6', '010.1.1.1', null],
  ['6', '192.0.2.01', null],
  ['6', '00.1.1.1', null],
  ['7', '0177.0.0.1', null],
  ['8', '0x7f.0.0.1', null],
  ['8', '0X7F.0.0.1', null],
  ['8', '0x7f000001', null],
  ['9', '2130706433', null],
  ['10', '1.1.1', null],
  ['10', '1', null],
  ['10', '1.1', null],
  ['10', '1.1.1.1.1', null],
  ['11', '192.0.2.1.', null],
  ['11', '.192.0.2.1', null],
  ['11', '192.0..2', null],
  ['12', '256.1.1.1', null],
  ['12', '192.0.2.256', null],
  ['12', '1000.1.1.1', null],
  ['13', 'localhost', null],
  ['13', 'evil.example', null],
  ['14', '192.0.2.0/24', null],
  ['14', '192.0.2.1/32', null],
  ['15', '0.0.0.0/0', null],
  ['15', '::/0', null],
  ['16', '192.0.2.1-192.0.2.255', null],
  ['17', '::ffff:192.0.2.1', '192.0.2.1'],
  ['17', '::ffff:c000:201', '192.0.2.1'],
  ['17', '::FFFF:C000:0201', '192.0.2.1'],
  ['17', '0:0:0:0:0:ffff:192.0.2.1', '192.0.2.1'],
  ['18', '::ffff:127.0.0.1', '127.0.0.1'],
  ['19', '2001:DB8::1', '2001:db8::1'],
  ['19', '2001:db8:0:0:0:0:0:1', '2001:db8::1'],
  ['19', '2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
  ['20', 'fe80::1%lo', null],
  ['20', 'fe80::1%25eth0', null],
  ['20', 'fe80::1', null],
  ['20', 'FEBF:ffff::1', null],
  ['20', 'fec0::1', 'fec0::1'],
  ['21', '::', null],
  ['21', '0:0:0:0:0:0:0:0', null],
  ['21', '0.0.0.0', null],
  ['21', '0.1.2.3', null],
  ['21', '0.255.255.255', null],
  ['21', '255.255.255.255', null],
  ['21', '224.0.0.1', null],
  ['21', '239.255.255.255', null],
  ['21', 'ff02::1', null],
  ['21', 'FF0E::1', null],
  ['21', '::ffff:0.0.0.0', null],
  ['21', '::ffff:224.0.0.1', null],
  ['21', '::ffff:255.255.255.255', null],
  ['21', '1.0.0.0', '1.0.0.0'],
  ['21', '223.255.255.255', '223.255.255.255'],
  ['21', '255.255.255.254', null],
  ['21', '240.0.0.1', null],
  ['21', '223.255.255.254', '223.255.255.254'],
  ['21', '169.254.169.254', null],
  ['21', '100::1', null],
  ['21', 'feff::1', 'feff::1'],
  ['22', '127.0.0.1', '127.0.0.1'],
  ['22', '::1', '::1'],
  ['23', 'unix:', null],
  ['24', ' 192.0.2.1 ', '192.0.2.1'],
  ['24', '\t192.0.2.1\t', '192.0.2.1'],
  ['24', ' 2001:db8::1', '2001:db8::1'],
  ['24', '192.0.2. 1', null],
  ['24', '192.0.2.1 198.51.100.7', null],
  ['24', '2001:db8:: 1', null],
  ['24', '192.0.2.1\n', null],
  ['24', '192.0.2.1\r', null],
  ['24', '\u00a0192.0.2.1', null],
  ['25', '-j ACCEPT', null],
  ['25', '--flush', null],
  ['26', '192.0.2.1 } ; delete table inet hostfw ; add element inet rl p4 { 198.51.100.9', null],
  ['27', '$(id)', null],
  ['27', '`id`', null],
  ['27', '192.0.2.1;id', null],
  ['27', 'a|b', null],
  ['27', 'a&b', null],
  ['28', '١٩٢.٠.٢.١', null],
  ['29', '１９２.０.２.１', null],
  ['29', Buffer.from('１９２.０.２.１', 'utf8').toString('latin1'), null],
  ['29', '２００１:db8::1', null],
  ['30', '192.0.2.1\xff', null],
  ['30', '192.0.2.1\u0000', null],
  ['31', '1'.repeat(8192), null],
  ['31', '2001:0db8:0000:0000:0000:0000:192.168.100.200', '2001:db8::c0a8:64c8'],
  ['31', '2001:0db8:0000:0000:0000:0000:192.168.100.200 '.padStart(50), '2001:db8::c0a8:64c8'],
  ['31', '02001:db8:0000:0000:0000:0000:192.168.100.200', null],
  ['31', '0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:1', null],
  // IPv6 grammar
  ['', ':::1', null],
  ['', '1:::2', null],
  ['', '1::2::3', null],
  ['', ':1:2:3:4:5:6:7', null],
  ['', '1:2:3:4:5:6:7:', null],
  ['', ':', null],
  ['', '1:2:3:4:5:6:7', null],
  ['', '1:2:3:4:5:6:7:8:9', null],
  ['', '1:2:3:4:5:6:7:8::', null],
  ['', '12345::1', null],
  ['', 'g::1', null],
  ['', '::ffff:010.1.1.1', null],
  ['', '::ffff:1.2.3', null],
  ['', '::1.2.3.4:5', null],
  ['', '1:2:3:4:5:6:7:1.2.3.4', null],
  ['', '1.2.3.4::', null],
  ['', '[2001:db8::1]', null],
  ['', '2001:db8::1/64', null],
  ['', '2001:db8::ff00:42:8329', '2001:db8::ff00:42:8329'],
  ['', '2001:0DB8:0000:0000:0000:FF00:0042:8329', '2001:db8::ff00:42:8329'],
  ['', '2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
  ['', '2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
  ['', '2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
  ['', '2001:db8::1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
  ['', '::1:2:3:4:5:6:7', '0:1:2:3:4:5:6:7'],
  ['', '1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
  ['', '1::', '1::'],
  ['', '1:0:0:0:0:0:0:0', '1::'],
  ['', '0:0:1::', '0:0:1::'],
  ['', '1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5:6:102:304'],
  ['', '64:ff9b::192.0.2.1', '64:ff9b::c000:201'],
  ['', '::192.0.2.1', '::c000:201'],
  ['', '::ffff:0:c000:201', '::ffff:0:c000:201'],
];

describe('parseAddress: the bad-input corpus (HARDENING.md §4)', () => {
  for (const [row, input, expected] of corpus) {
    const label = `${row ? `row ${row}: ` : ''}${JSON.stringify(input.length > 60 ? `${input.slice(0, 20)}…(${input.length})` : input)} → ${expected ?? 'rejected'}`;
    test(label, () => {
      const n = parseAddress(input);
      assert.equal(n === null ? null : n.text, expected);
      if (n) {
        assert.equal(n.prefix, n.family === 4 ? 32 : 128);
        assert.equal(n.family, expected?.includes(':') ? 6 : 4);
      }
    });
  }
});

describe('parseAddress', () => {
  test('gives the integer value', () => {
    assert.deepEqual(address('192.0.2.1'), { family: 4, value: 0xc0000201n, prefix: 32, text: '192.0.2.1' });
    assert.deepEqual(address('::ffff:192.0.2.1'), { family: 4, value: 0xc0000201n, prefix: 32, text: '192.0.2.1' });
    assert.deepEqual(address('::1'), { family: 6, value: 1n, prefix: 128, text: '::1' });
    assert.equal(address('2001:db8::ff00:42:8329').value, 0x20010db8000000000000ff0000428329n);
    assert.equal(address('fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff').value, 0xfe7fffffffffffffffffffffffffffffn);
  });

  test('caps the length at 45 characters', () => {
    const longest = '2001:0db8:0000:0000:0000:0000:192.168.100.200';
    assert.equal(longest.length, 45);
    assert.ok(parseAddress(longest));
    assert.equal(parseAddress(`0${longest}`), null);
    assert.equal(parseAddress('x'.repeat(46)), null);
    assert.equal(parseAddress('1.1.1.1'.padEnd(46, '1')), null);
  });

  test('dotted IPv4 round-trips for every 32-bit value', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), (v) => {
      const dotted = [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
      const rejected = v >>> 24 === 0 || v >>> 24 >= 224 || v >>> 16 === 0xa9fe;
      const n = parseAddress(dotted);
      const mapped = parseAddress(`::ffff:${dotted}`);
      if (rejected) {
        assert.equal(n, null);
        assert.equal(mapped, null);
        return;
      }
      assert.deepEqual(n, { family: 4, value: BigInt(v), prefix: 32, text: dotted });
      assert.deepEqual(mapped, n);
    }), { numRuns: 2000 });
  });

  const max128 = (1n << 128n) - 1n;
  const linkLocal = (v: bigint): boolean => v >> 118n === 0x3fan;
  // RFC 6666: 100::/64 is discard-only, never a client.
  const discardOnly = (v: bigint): boolean => v >> 64n === 0x0100_0000_0000_0000n;
  const usableV6 = (v: bigint): boolean =>
    v !== 0n && v >> 120n !== 0xffn && v >> 32n !== 0xffffn && !linkLocal(v) && !discardOnly(v);
  const fullText = (v: bigint, upper: boolean): string => {
    const hex = v.toString(16).padStart(32, '0');
    const text = hex.match(/.{4}/g)?.join(':') ?? '';
    return upper ? text.toUpperCase() : text;
  };
  const groupsToValue = (gs: number[]): bigint => gs.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);

  function checkV6(v: bigint, upper: boolean): void {
    const n = parseAddress(fullText(v, upper));
    if (!usableV6(v)) {
      if (v === 0n || v >> 120n === 0xffn || linkLocal(v) || discardOnly(v)) assert.equal(n, null);
      return;
    }
    assert.ok(n);
    assert.equal(n.family, 6);
    assert.equal(n.value, v);
    const again = parseAddress(n.text);
    assert.ok(again);
    assert.equal(again.value, v);
    assert.equal(again.text, n.text);
    // Node's own formatter prints ::/80 values in mixed notation; elsewhere it follows RFC 5952 too.
    if (v >> 48n !== 0n) assert.equal(n.text, new SocketAddress({ address: n.text, family: 'ipv6' }).address);
  }

  test('canonical IPv6 text parses back to the same value (random 128-bit values)', () => {
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: max128 }), fc.boolean(), checkV6), { numRuns: 2000 });
  });

  test('canonical IPv6 text parses back to the same value (values rich in zero groups)', () => {
    const g = fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff }));
    fc.assert(fc.property(fc.array(g, { minLength: 8, maxLength: 8 }), fc.boolean(), (gs, upper) => {
      checkV6(groupsToValue(gs), upper);
    }), { numRuns: 2000 });
  });

  test('arbitrary text never throws, and anything accepted is canonical and stable', () => {
    const chars = fc.constantFrom(...'0123456789abcdefABCDEFx:.%/ \t-,'.split(''));
    fc.assert(fc.property(fc.string({ unit: chars, maxLength: 50 }), (s) => {
      const n = parseAddress(s);
      if (n === null) return;
      assert.ok(n.text.length <= 45);
      assert.deepEqual(parseAddress(n.text), n);
    }), { numRuns: 5000 });
  });
});

describe('parseNetwork', () => {
  const cases: [input: string, expected: string | null][] = [
    ['192.0.2.77/24', '192.0.2.0/24'],
    ['127.0.0.1/8', '127.0.0.0/8'],
    ['10.0.0.0/8', '10.0.0.0/8'],
    ['192.0.2.1/31', '192.0.2.0/31'],
    ['2001:db8::1/64', '2001:db8::/64'],
    ['2001:DB8:0:F::1/61', '2001:db8:0:8::/61'],
    ['2001:db8:ffff::/33', '2001:db8:8000::/33'],
    ['0.0.0.0/0', '0.0.0.0/0'],
    ['255.255.255.255/0', '0.0.0.0/0'],
    ['::/0', '::/0'],
    ['ffff::/0', '::/0'],
    ['224.0.0.0/4', '224.0.0.0/4'],
    ['ff00::/8', 'ff00::/8'],
    ['192.0.2.1/32', '192.0.2.1'],
    ['2001:db8::1/128', '2001:db8::1'],
    ['::1/128', '::1'],
    ['192.0.2.1', '192.0.2.1'],
    ['2001:DB8::1', '2001:db8::1'],
    [' 192.0.2.0/24 ', '192.0.2.0/24'],
    // mapped IPv4
    ['::ffff:192.0.2.1', '192.0.2.1'],
    ['::ffff:192.0.2.0/120', '192.0.2.0/24'],
    ['::ffff:192.0.2.1/128', '192.0.2.1'],
    ['::ffff:c000:201/128', '192.0.2.1'],
    ['::ffff:0:0/96', '0.0.0.0/0'],
    ['::ffff:192.0.2.1/64', '::/64'],
    ['::ffff:192.0.2.1/95', '::fffe:0:0/95'],
    // what a bare address may not be, a /32 or /128 may not be either
    ['0.0.0.0', null],
    ['::', null],
    ['0.0.0.0/32', null],
    ['::/128', null],
    ['255.255.255.255/32', null],
    ['224.0.0.1/32', null],
    ['ff02::1/128', null],
    ['::ffff:0.0.0.0/128', null],
    // bad prefixes
    ['192.0.2.0/33', null],
    ['192.0.2.0/-1', null],
    ['192.0.2.0/+8', null],
    ['192.0.2.0/08', null],
    ['192.0.2.0/00', null],
    ['192.0.2.0/', null],
    ['/24', null],
    ['192.0.2.0/24/24', null],
    ['192.0.2.0//24', null],
    ['192.0.2.0/ 24', null],
    ['192.0.2.0 /24', null],
    ['192.0.2.0/2 4', null],
    ['192.0.2.0/0x8', null],
    ['192.0.2.0/1000', null],
    ['192.0.2.0/٢٤', null],
    ['2001:db8::/129', null],
    ['2001:db8::/064', null],
    // bad bases
    ['010.0.0.0/8', null],
    ['10.0.0/8', null],
    ['fe80::%lo/64', null],
    ['localhost/8', null],
    ['10.0.0.0/8,192.0.2.0/24', null],
    ['10.0.0.0-10.0.0.255', null],
  ];
  for (const [input, expected] of cases) {
    test(`${JSON.stringify(input)} → ${expected ?? 'rejected'}`, () => {
      assert.equal(parseNetwork(input)?.text ?? null, expected);
    });
  }

  test('zeroes the host bits in the value', () => {
    assert.deepEqual(network('192.0.2.77/24'), { family: 4, value: 0xc0000200n, prefix: 24, text: '192.0.2.0/24' });
    assert.deepEqual(network('2001:db8::1/64'), { family: 6, value: 0x20010db8n << 96n, prefix: 64, text: '2001:db8::/64' });
    assert.deepEqual(network('0.0.0.0/0'), { family: 4, value: 0n, prefix: 0, text: '0.0.0.0/0' });
    assert.deepEqual(network('::/0'), { family: 6, value: 0n, prefix: 0, text: '::/0' });
    assert.deepEqual(network('::ffff:192.0.2.9/120'), { family: 4, value: 0xc0000200n, prefix: 24, text: '192.0.2.0/24' });
  });

  test('a full-length prefix is the address itself', () => {
    assert.deepEqual(network('192.0.2.1/32'), address('192.0.2.1'));
    assert.deepEqual(network('2001:db8::1/128'), address('2001:db8::1'));
  });

  test('its canonical text parses back to the same network', () => {
    fc.assert(fc.property(fc.bigInt({ min: 1n, max: (1n << 128n) - 1n }), fc.integer({ min: 0, max: 127 }), (v, len) => {
      const text = v.toString(16).padStart(32, '0').match(/.{4}/g)?.join(':') ?? '';
      const n = parseNetwork(`${text}/${len}`);
      assert.ok(n);
      assert.deepEqual(parseNetwork(n.text), n);
    }), { numRuns: 1000 });
  });
});

describe('ipv4', () => {
  test('gives back the address a 32-bit value was taken from', () => {
    for (const text of ['1.2.3.4', '203.0.113.7', '223.255.255.254', '100.64.0.1']) {
      const n = address(text);
      assert.deepEqual(ipv4(Number(n.value)), n);
      // The limiter keeps IPv4 clients as signed 32-bit integers.
      assert.deepEqual(ipv4((Number(n.value) | 0) >>> 0), n);
    }
  });

  test('refuses what is not a 32-bit value', () => {
    for (const v of [-1, 2 ** 32, 1.5, NaN]) assert.throws(() => ipv4(v), RangeError);
  });
});

describe('toNetwork', () => {
  test('aggregates an IPv6 client to its /64', () => {
    assert.equal(toNetwork(address('2001:db8::1'), 64).text, '2001:db8::/64');
    assert.deepEqual(toNetwork(address('2001:db8:1:2:3:4:5:6'), 64), network('2001:db8:1:2::/64'));
  });

  test('masks at any length', () => {
    assert.deepEqual(toNetwork(address('192.0.2.77'), 24), network('192.0.2.0/24'));
    assert.equal(toNetwork(address('192.0.2.77'), 0).text, '0.0.0.0/0');
    assert.equal(toNetwork(address('2001:db8:0:f::1'), 61).text, '2001:db8:0:8::/61');
    assert.equal(toNetwork(address('2001:db8::1'), 0).text, '::/0');
    assert.equal(toNetwork(network('10.1.0.0/16'), 8).text, '10.0.0.0/8');
  });

  test('returns the network unchanged when the prefix is not shorter', () => {
    const n = network('192.0.2.0/24');
    assert.equal(toNetwork(n, 24), n);
    assert.equal(toNetwork(n, 32), n);
    const a = address('2001:db8::1');
    assert.equal(toNetwork(a, 128), a);
  });

  test('refuses a negative or fractional prefix', () => {
    assert.throws(() => toNetwork(address('192.0.2.1'), -1), RangeError);
    assert.throws(() => toNetwork(address('192.0.2.1'), 1.5), RangeError);
  });

  test('the result contains the address', () => {
    fc.assert(fc.property(fc.bigInt({ min: 1n, max: (1n << 127n) }), fc.integer({ min: 0, max: 128 }), (v, len) => {
      const a = parseAddress(v.toString(16).padStart(32, '0').match(/.{4}/g)?.join(':') ?? '');
      if (a?.family !== 6) return;
      const n = toNetwork(a, len);
      assert.ok(contains(n, a));
      assert.deepEqual(parseNetwork(n.text), n);
    }), { numRuns: 1000 });
  });
});

describe('contains and overlaps', () => {
  const cases: [outer: string, inner: string, contained: boolean, overlapping: boolean][] = [
    ['10.0.0.0/8', '10.1.2.3', true, true],
    ['10.1.2.3', '10.0.0.0/8', false, true],
    ['10.0.0.0/8', '10.0.0.0/8', true, true],
    ['10.0.0.0/8', '11.0.0.1', false, false],
    ['10.0.0.0/8', '10.255.0.0/16', true, true],
    ['10.0.0.0/16', '10.1.0.0/16', false, false],
    ['0.0.0.0/0', '203.0.113.7', true, true],
    ['::/0', '203.0.113.7', false, false],
    ['0.0.0.0/0', '::1', false, false],
    ['2001:db8::/32', '2001:db8:ffff::1', true, true],
    ['2001:db8::/32', '2001:db9::1', false, false],
    ['2001:db8::/64', '2001:db8::/48', false, true],
    ['::/0', '::1', true, true],
    ['192.0.2.1', '192.0.2.1', true, true],
    ['192.0.2.1', '192.0.2.2', false, false],
  ];
  for (const [a, b, contained, overlapping] of cases) {
    test(`${a} and ${b}`, () => {
      assert.equal(contains(network(a), network(b)), contained);
      assert.equal(overlaps(network(a), network(b)), overlapping);
      assert.equal(overlaps(network(b), network(a)), overlapping);
    });
  }
});

describe('clientKey', () => {
  test('keeps IPv4 as is and aggregates IPv6', () => {
    const v4 = address('192.0.2.1');
    assert.equal(clientKey(v4, 64), v4);
    assert.equal(clientKey(address('2001:db8::1'), 64).text, '2001:db8::/64');
    assert.equal(clientKey(address('2001:db8:0:0:ffff::1'), 48).text, '2001:db8::/48');
    const v6 = address('2001:db8::1');
    assert.equal(clientKey(v6, 128), v6);
  });
});

test('special-purpose ranges are never a client, as an address or inside a network', () => {
  const never = ['0.0.0.0/8', '0.1.2.0/24', '127.0.0.0/8', '169.254.0.0/16', '169.254.169.0/24', '224.0.0.0/8', '240.0.0.0/8',
    'fe80::/64', 'fe80::/32', 'fe80::/10', 'ff02::/16', '::1', '::/96', '100::/64'];
  for (const text of never) {
    const net = parseNetwork(text);
    assert.ok(net, text);
    assert.ok(neverAClient(net), `${text} is never a client`);
  }
  for (const text of ['192.0.2.1', '10.0.0.0/8', '100.64.0.0/10', '198.51.100.0/24', '2001:db8::/32', '64:ff9b::c000:201', 'fec0::/64', '1.0.0.0/8']) {
    const net = parseNetwork(text);
    assert.ok(net, text);
    assert.equal(neverAClient(net), null, `${text} may be a client`);
  }
  assert.equal(parseAddress('169.254.169.254'), null, 'the metadata address is no notification');
});

test('a NAT64 client is counted as its own address, other IPv6 clients as their network', () => {
  const nat64 = parseAddress('64:ff9b::c000:201');
  assert.ok(nat64);
  assert.equal(clientKey(nat64, 64).text, '64:ff9b::c000:201');
  const plain = parseAddress('2001:db8::1');
  assert.ok(plain);
  assert.equal(clientKey(plain, 64).text, '2001:db8::/64');
});
