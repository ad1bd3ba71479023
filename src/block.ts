/**
 * The block record every room shares: what a block is, where it came from,
 * how it is shown (SPEC §6), and what may be blocked at all.
 */
import { parseNetwork, type Family, type Network } from './address.js';
import { parseDuration } from './duration.js';
import { RatedError } from './errors.js';

export type Source = 'rule' | 'manual' | 'cluster' | 'reconciled' | 'migrated';

/** Every source, for readers of stored blocks (the journal, Redis). */
export const SOURCES: ReadonlySet<Source> = new Set<Source>(['rule', 'manual', 'cluster', 'reconciled', 'migrated']);

/** Blocks decided on this host: hooks run for them and Redis stores them; those adopted from the kernel or other nodes are theirs. */
export const DECIDED_HERE: ReadonlySet<Source> = new Set<Source>(['rule', 'manual', 'migrated']);

/** One active block. Times are milliseconds on the daemon's clock; null where unknown. */
export interface Block {
  readonly net: Network;
  rule: string | null;
  reason: string | null;
  source: Source;
  since: number | null;
  expires: number | null;
  hits: number | null;
}

/** What a block's kernel element dropped. */
export interface Dropped {
  readonly packets: number;
  readonly bytes: number;
}

/** The JSON shape of a block (SPEC §6). */
export interface BlockView {
  ip: string;
  rule: string | null;
  reason: string | null;
  source: Source;
  since: string | null;
  expires: string | null;
  hits: number | null;
  /** What its kernel element dropped, when read from the kernel (`rated list`); null when not known. */
  dropped: Dropped | null;
}

/** A block an operator asks for: `rated block`, an imported or migrated entry. */
export interface ManualBlock {
  readonly ip: string;
  /** A duration ("6h", or seconds); the default block time without it. */
  readonly for?: string | number;
  readonly reason?: string;
}

/** What a batch of manual blocks did; refusals by reason (allow-listed, own address, never a client, invalid, bad duration). */
export interface BatchResult {
  added: number;
  extended: number;
  unchanged: number;
  refused: Record<string, number>;
  /** The first few refusals, as said to `rated block`. */
  examples: string[];
  /** Every refused entry's address (canonical where it could be read). */
  refusedIps: string[];
}

/** Renders a block as SPEC §6 JSON, with what its element dropped when that was read. */
export function viewBlock(b: Block, dropped: Dropped | null = null): BlockView {
  return {
    ip: b.net.text,
    rule: b.rule,
    reason: b.reason,
    source: b.source,
    since: b.since === null ? null : new Date(b.since).toISOString(),
    expires: b.expires === null ? null : new Date(b.expires).toISOString(),
    hits: b.hits,
    dropped,
  };
}

/** How `rated list --sort` orders blocks: most dropped, soonest to end, newest first. */
export type BlockOrder = 'dropped' | 'expires' | 'since';

/** What a listing asks for (`rated list --sort --limit`, GET /blocks?sort=&limit=). */
export interface ListQuery {
  readonly sort?: BlockOrder;
  /** At most this many blocks, after sorting. */
  readonly limit?: number;
}

/** Orders and cuts a listing that is already in hand (the kernel's, while the daemon is down). */
export function orderViews(views: BlockView[], q: ListQuery): BlockView[] {
  const at = (iso: string | null, none: number): number => (iso === null ? none : Date.parse(iso));
  if (q.sort === 'dropped') views.sort((a, b) => (b.dropped?.packets ?? -1) - (a.dropped?.packets ?? -1));
  else if (q.sort === 'expires') views.sort((a, b) => at(a.expires, Infinity) - at(b.expires, Infinity));
  else if (q.sort === 'since') views.sort((a, b) => at(b.since, -Infinity) - at(a.since, -Infinity));
  return q.limit === undefined ? views : views.slice(0, q.limit);
}

/** Networks wider than these are never blocked, whatever their source. */
export const WIDEST: Readonly<Record<Family, number>> = { 4: 8, 6: 32 };

/** True when a network is wider than any block may be. */
export function tooWide(net: Network): boolean {
  return net.prefix < WIDEST[net.family];
}

/** Parses the target of `block` and `unblock`: an address or a CIDR network, not wider than /8 or /32. */
export function parseBlockTarget(input: string): Network {
  const net = parseNetwork(input.trim());
  if (!net) throw new RatedError('USAGE', `expected an IP address or CIDR network, got ${JSON.stringify(input.slice(0, 64))}`);
  if (tooWide(net)) {
    throw new RatedError('USAGE', `${net.text} is too wide: networks wider than /${WIDEST[net.family]} are never blocked`);
  }
  return net;
}

/** The duration of a manual block (`--for`, a batch entry's `for`) in milliseconds; a usage error naming it otherwise. */
export function parseBlockDuration(input: string | number): number {
  const ms = parseDuration(input);
  if (ms === null || ms <= 0) throw new RatedError('USAGE', `--for: expected a duration like "90s", "10m", "6h", "1d", at most 3650d, got ${JSON.stringify(input)}`);
  return ms;
}
