import assert from 'node:assert/strict';
import { parseNetwork, type Network } from '../../src/address.js';

/** A test's address or network, parsed by the one validator; fails the test when it does not parse. */
export function net(text: string): Network {
  const n = parseNetwork(text);
  assert.ok(n, `test address ${JSON.stringify(text)} must parse`);
  return n;
}
