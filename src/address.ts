/**
 * The one validator and canonicaliser every address passes through, whatever
 * its source (HTTP, UDP, files, CLI, Redis, configuration). Firewall input is
 * built only from values this module produced.
 */

export type Family = 4 | 6;

/** A validated address or network in canonical form. */
export interface Network {
  readonly family: Family;
  /** The network's first address as an unsigned integer (32 or 128 bits). */
  readonly value: bigint;
  /** Prefix length: 32 or 128 for a single address. */
  readonly prefix: number;
  /** Canonical text: dotted IPv4 or compressed lowercase IPv6, with `/prefix` only for networks. */
  readonly text: string;
}

/** Parses one client address from untrusted input; null when it is not acceptable. */
export function parseAddress(_input: string): Network | null {
  throw new Error('not implemented');
}

/** Parses an address or CIDR network from the configuration or the CLI; null when invalid. */
export function parseNetwork(_input: string): Network | null {
  throw new Error('not implemented');
}
