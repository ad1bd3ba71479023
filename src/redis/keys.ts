/**
 * Key and channel names under `redis.prefix`. A client's counters carry the
 * client in a hash tag (`rated:{192.0.2.7}:default`), so every rule's counter
 * of one client lives on one Redis Cluster slot and one script can update
 * them together; the shared blocks live under the tag `{blocks}` for the same
 * reason. A client's text is an address or network, never `blocks`.
 */
export class RedisKeys {
  /** Hash of active blocks: field = address or network, value = JSON. */
  readonly blocks: string;
  /** Sorted set of active blocks by expiry (ms since the epoch). */
  readonly expires: string;
  /** Sorted set of lifted blocks by the time they were lifted, so a stale copy is not put back. */
  readonly lifted: string;
  /** The time of the last cluster-wide flush. */
  readonly flushed: string;
  /** Sorted set of blocks stored or lifted, by the Redis server's time of the change: what a node reads to catch up. */
  readonly changed: string;
  /** A random name this Redis's block data was started under: another one means it was lost (restart, failover without persistence). */
  readonly epoch: string;
  /** Where block changes are published. */
  readonly channel: string;

  constructor(readonly prefix: string) {
    this.blocks = `${prefix}{blocks}`;
    this.expires = `${prefix}{blocks}:expires`;
    this.lifted = `${prefix}{blocks}:lifted`;
    this.flushed = `${prefix}{blocks}:flushed`;
    this.changed = `${prefix}{blocks}:changed`;
    this.epoch = `${prefix}{blocks}:epoch`;
    this.channel = `${prefix}blocks`;
  }

  /** The counter of one client for one rule. */
  counter(client: string, rule: string): string {
    return `${this.prefix}{${client}}:${rule}`;
  }

  /** The block keys, in the order the block scripts take them. */
  get blockKeys(): [string, string, string, string, string, string] {
    return [this.blocks, this.expires, this.lifted, this.flushed, this.changed, this.epoch];
  }
}

/** Slots of a Redis Cluster. */
export const CLUSTER_SLOTS = 16384;

/**
 * The Redis Cluster slot of a key: CRC16 (XMODEM) of its hash tag (the text
 * between the first `{` and the next `}`, when not empty) or of the whole
 * key, modulo 16384 — as the Redis Cluster specification defines it.
 */
export function keySlot(key: string): number {
  const bytes = Buffer.from(key, 'utf8');
  let start = 0;
  let end = bytes.length;
  const open = bytes.indexOf(0x7b);
  if (open >= 0) {
    const close = bytes.indexOf(0x7d, open + 1);
    if (close > open + 1) {
      start = open + 1;
      end = close;
    }
  }
  let crc = 0;
  for (let i = start; i < end; i++) {
    crc ^= (bytes[i] ?? 0) << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % CLUSTER_SLOTS;
}
