// The address validator against independent parsers, on generated hostile
// strings: Node's own `net.isIP` decides what is an address, the
// `ip-address` library what it means, and the documented policy (no zone
// ids, no unspecified, multicast, broadcast, 0/8 or link-local) what may be
// blocked. parseAddress must equal that composition exactly, and its answer
// must be canonical: the only text a firewall command is ever built from.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import fc from 'fast-check';
import { Address6 } from 'ip-address';
import { clientKey, parseAddress, parseNetwork } from '../../src/address.js';
import { addressLike, seedFromEnv } from '../helpers/address-arbitrary.js';

const RUNS = 20_000;

/** Space and tab at both ends: what Node's HTTP parser trims from a header value, and all the validator trims. */
function trimBlanks(s: string): string {
  return s.replace(/^[ \t]+|[ \t]+$/g, '');
}

/** What an independent reading of `s` says the validator must answer. */
function expected(s: string): { family: 4 | 6; value: bigint } | null {
  const t = trimBlanks(s);
  const kind = isIP(t);
  if (kind === 0 || t.includes('%')) return null;
  if (kind === 4) {
    const value = t.split('.').reduce((acc, p) => acc * 256n + BigInt(p), 0n);
    return usable4(value) ? { family: 4, value } : null;
  }
  const value = new Address6(t).bigInt();
  // ::ffff:0:0/96 is the IPv4 address.
  if (value >> 32n === 0xffffn) {
    const v4 = value & 0xffffffffn;
    return usable4(v4) ? { family: 4, value: v4 } : null;
  }
  return usable6(value) ? { family: 6, value } : null;
}

function usable4(v: bigint): boolean {
  const first = v >> 24n;
  // Not this network, multicast, reserved, broadcast or link-local (169.254.0.0/16).
  return first !== 0n && first < 224n && v >> 16n !== 0xa9fen;
}

function usable6(v: bigint): boolean {
  const top = v >> 112n;
  // Not unspecified, multicast, link-local or discard-only (100::/64).
  return v !== 0n && top < 0xff00n && (top & 0xffc0n) !== 0xfe80n && v >> 64n !== 0x0100_0000_0000_0000n;
}

const CANONICAL = /^(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9a-f:]{2,39})$/;

test('parseAddress equals Node\'s grammar, the ip-address library\'s meaning and the documented policy', (t) => {
  const seed = seedFromEnv();
  t.diagnostic(`fast-check seed ${seed} (RATED_FC_SEED=${seed} replays it), ${RUNS} strings`);
  let accepted = 0;
  fc.assert(fc.property(addressLike, (s) => {
    const got = parseAddress(s);
    const want = expected(s);
    if (want === null) {
      assert.equal(got, null, `${JSON.stringify(s)} must be refused, got ${got?.text ?? ''}`);
      return;
    }
    accepted++;
    assert.ok(got, `${JSON.stringify(s)} must be accepted as ${want.value}`);
    assert.equal(got.family, want.family, JSON.stringify(s));
    assert.equal(got.value, want.value, JSON.stringify(s));
    assert.equal(got.prefix, got.family === 4 ? 32 : 128);
  }), { numRuns: RUNS, seed });
  t.diagnostic(`${accepted} of ${RUNS} were addresses`);
  assert.ok(accepted > RUNS / 10, `the generator makes enough valid addresses to mean something: ${accepted}`);
});

test('an accepted address is canonical: ASCII, short, a fixed point, the same in every reader', () => {
  fc.assert(fc.property(addressLike, (s) => {
    const n = parseAddress(s);
    if (n === null) return;
    assert.match(n.text, CANONICAL, `${JSON.stringify(s)} → ${JSON.stringify(n.text)}`);
    assert.deepEqual(parseAddress(n.text), n, `${n.text} reads back as itself`);
    assert.deepEqual(parseNetwork(n.text), n, `${n.text} means the same to parseNetwork`);
    if (n.family === 6) {
      // The canonical text is RFC 5952: what ip-address writes in its correct form.
      assert.equal(n.text, new Address6(n.text).correctForm(), `${n.text} is RFC 5952`);
      assert.equal(isIP(n.text), 6);
    } else {
      assert.equal(isIP(n.text), 4);
    }
    // The client key derived from it (IPv6 per /64) is built by the same module and reads back too.
    const client = clientKey(n, 64);
    assert.deepEqual(parseNetwork(client.text), client, `${client.text} reads back as itself`);
  }), { numRuns: RUNS / 4, seed: seedFromEnv() });
});

test('no input makes the validator throw or run long, however large', () => {
  fc.assert(fc.property(fc.oneof(addressLike, fc.string({ unit: 'binary', maxLength: 100_000 })), (s) => {
    const n = parseAddress(s);
    const m = parseNetwork(s);
    assert.ok(n === null || typeof n.text === 'string');
    assert.ok(m === null || typeof m.text === 'string');
  }), { numRuns: 2000, seed: seedFromEnv() });
});
