import { spawn } from 'node:child_process';
import { networkInterfaces } from 'node:os';
import { performance } from 'node:perf_hooks';
import { contains, parseAddress, parseNetwork, type Network } from '../address.js';
import { configError } from '../errors.js';

interface Range<T> {
  readonly first: T;
  readonly last: T;
}

/**
 * Addresses and networks that are never counted and never blocked: the
 * configured entries, and with `allowSelf` this host's own addresses, which
 * change at runtime (a new VIP, a failover address) and are read again by
 * `refreshSelf`.
 */
export class AllowList {
  /** The configured entries, in canonical form, without duplicates. */
  readonly entries: readonly Network[];
  // Kept as first/last address so a lookup is a few comparisons per entry,
  // with IPv4 on plain numbers rather than BigInt.
  private readonly v4: readonly Range<number>[];
  private readonly v6: readonly Range<bigint>[];
  private self4: readonly Range<number>[] = [];
  private self6: readonly Range<bigint>[] = [];
  private selfTexts = new Set<string>();
  private selfReadAt = -Infinity;

  constructor(entries: readonly Network[], private readonly readSelf: (() => Network[]) | null = null) {
    const seen = new Map<string, Network>();
    for (const n of entries) seen.set(n.text, n);
    this.entries = Object.freeze([...seen.values()]);
    this.v4 = this.entries.filter((n) => n.family === 4).map(rangeV4);
    this.v6 = this.entries.filter((n) => n.family === 6).map(rangeV6);
    this.refreshSelf();
  }

  /** Builds the list from `allow` entries, plus this host's own addresses when `allowSelf`; throws a CONFIG error naming a bad entry. */
  static fromConfig(entries: readonly string[], allowSelf: boolean): AllowList {
    const nets: Network[] = [];
    entries.forEach((entry, i) => {
      const n = parseNetwork(entry);
      if (n === null) throw configError(`allow[${i}]`, `expected an IP address or CIDR network, got ${JSON.stringify(entry)}`);
      nets.push(n);
    });
    return new AllowList(nets, allowSelf ? ownAddresses : null);
  }

  /** Which entry allows `n` (`allow 10.0.0.0/8`, `allowSelf 192.0.2.1`), or null: for `rated explain`. */
  why(n: Network): string | null {
    const hit = (e: Network): boolean => contains(e, n) || contains(n, e);
    const entry = this.entries.find(hit);
    if (entry) return `allow ${entry.text}`;
    for (const text of this.selfTexts) {
      const own = parseNetwork(text);
      if (own && hit(own)) return `allowSelf ${own.text} (an address of this host)`;
    }
    return null;
  }

  /** This host's own addresses as last read. */
  get own(): readonly string[] {
    return [...this.selfTexts];
  }

  /**
   * Reads this host's addresses again (with `allowSelf`); returns the ones
   * that were not known before. `maxAgeMs` skips the read when the last one
   * is that recent: a block may call it for every decision.
   */
  refreshSelf(maxAgeMs = 0, now = performance.now()): Network[] {
    if (this.readSelf === null || now - this.selfReadAt < maxAgeMs) return [];
    this.selfReadAt = now;
    const own = this.readSelf();
    const added = own.filter((n) => !this.selfTexts.has(n.text));
    if (added.length === 0 && own.length === this.selfTexts.size) return [];
    this.selfTexts = new Set(own.map((n) => n.text));
    this.self4 = own.filter((n) => n.family === 4).map(rangeV4);
    this.self6 = own.filter((n) => n.family === 6).map(rangeV6);
    return added;
  }

  /** True when `n` (an address or a network) shares any address with an entry, so blocking it could hit an allowed client. */
  has(n: Network): boolean {
    // Prefixes either nest or are disjoint, so overlapping ranges mean one contains the other.
    if (n.family === 4) {
      const size = 2 ** (32 - n.prefix);
      const value = Number(n.value);
      const first = value - (value % size);
      const last = first + size - 1;
      for (const r of this.v4) if (r.first <= last && first <= r.last) return true;
      for (const r of this.self4) if (r.first <= last && first <= r.last) return true;
      return false;
    }
    const { first, last } = rangeV6(n);
    for (const r of this.v6) if (r.first <= last && first <= r.last) return true;
    for (const r of this.self6) if (r.first <= last && first <= r.last) return true;
    return false;
  }
}

function rangeV4(n: Network): Range<number> {
  const size = 2 ** (32 - n.prefix);
  const value = Number(n.value);
  const first = value - (value % size);
  return { first, last: first + size - 1 };
}

function rangeV6(n: Network): Range<bigint> {
  const hostBits = BigInt(128 - n.prefix);
  const first = (n.value >> hostBits) << hostBits;
  return { first, last: first | ((1n << hostBits) - 1n) };
}

/** Every address of this host's interfaces, one by one, plus loopback. */
function ownAddresses(): Network[] {
  // Loopback is this host even where lo carries no address yet (a fresh
  // network namespace, IPv6 disabled at runtime): never let it be blocked.
  const out: Network[] = [];
  for (const text of ['127.0.0.1', '::1']) {
    const n = parseAddress(text);
    if (n) out.push(n);
  }
  for (const list of Object.values(networkInterfaces())) {
    for (const info of list ?? []) {
      const n = parseAddress(info.address);
      if (n) out.push(n);
    }
  }
  return out;
}

/**
 * Calls `onChange` whenever the kernel reports an address change
 * (`ip -o monitor address`), so a new VIP is allowed before anyone can be
 * blocked for it. Without `ip` nothing is reported, and the periodic check
 * and SIGHUP still read the addresses. Returns the function that stops it.
 */
export function watchAddresses(onChange: () => void): () => void {
  const child = spawn('ip', ['-o', 'monitor', 'address'], { stdio: ['ignore', 'pipe', 'ignore'] });
  child.on('error', () => undefined);
  child.stdout.on('data', onChange);
  // Neither the process nor its pipe keeps the daemon from exiting.
  child.unref();
  (child.stdout as unknown as { unref?: () => void }).unref?.();
  return () => child.kill();
}
