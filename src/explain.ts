import { performance } from 'node:perf_hooks';
import { clientKey, neverAClient, type Network } from './address.js';
import { parseBlockTarget, viewBlock, type BlockView } from './block.js';
import { formatDuration } from './duration.js';
import type { Blocker } from './enforce/blocker.js';
import type { AllowList } from './limit/allow.js';
import type { Limiter } from './limit/limiter.js';

/** `rated explain` (SPEC §2): why an address is or is not blocked. */
export interface Explanation {
  /** The address or network, canonical. */
  readonly ip: string;
  /** What it is counted and blocked as: the address, or its IPv6 `/ipv6Prefix` network. */
  readonly client: string;
  /** Why it is never blocked (`allow 10.0.0.0/8`, `allowSelf …`, `loopback …`), or null. */
  readonly allowed: string | null;
  /** The block that holds it (its own, its client network's, or a wider one), with what its element dropped. */
  readonly blocked: BlockView | null;
  /** Per rule: its count in the window now, and how many more hits would block; null while the daemon is down. */
  readonly rules: ReadonlyArray<{ rule: string; hits: number; limit: number; window: string; toBlock: number }> | null;
}

/** Answers `rated explain` from the daemon's parts (`limiter` null: the daemon is down, no counts). */
export async function explain(ip: string, parts: {
  readonly allow: AllowList;
  readonly blocker: Blocker;
  readonly limiter: Limiter | null;
  readonly ipv6Prefix: number;
  /** The monotonic time hits are counted on. @default performance.now() */
  readonly at?: number;
}): Promise<Explanation> {
  const net = parseBlockTarget(ip);
  const single = net.prefix === (net.family === 4 ? 32 : 128);
  const client: Network = single ? clientKey(net, parts.ipv6Prefix) : net;
  const special = neverAClient(net);
  const allowed = parts.allow.why(net) ?? (special === null ? null : `${special}, never a client`);
  const block = parts.blocker.holding(client) ?? parts.blocker.holding(net);
  const blocked = block ? viewBlock(block, await parts.blocker.droppedOf(block.net)) : null;
  const rules = parts.limiter === null ? null : parts.limiter.countsOf(client, parts.at ?? performance.now()).map((r) => ({
    rule: r.rule, hits: r.hits, limit: r.limit, window: formatDuration(r.windowMs), toBlock: Math.max(1, r.limit + 1 - r.hits),
  }));
  return { ip: net.text, client: client.text, allowed, blocked, rules };
}
