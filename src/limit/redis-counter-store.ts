import type { CounterStore, CountRequest, CountResult, StoreRule } from './counter-store.js';
import { script, type RedisLink, type Script } from '../redis/connection.js';
import type { RedisKeys } from '../redis/keys.js';
import { COUNT } from '../redis/scripts.js';

const COUNT_SCRIPT: Script = script(COUNT);

/** Slack on every counter's time to live, for clocks of different nodes that disagree a little. */
const TTL_MARGIN_MS = 2000;

/** How long a counter must outlive its last hit: until its newest bucket has left the window. */
export function counterTtlMs(rule: StoreRule): number {
  const w = rule.window;
  return Math.ceil((w.windowMs * (w.buckets + 1)) / w.buckets) + TTL_MARGIN_MS;
}

/** Clients per script call on a single server: one round trip and one script run for many clients. */
const CLIENTS_PER_CALL = 200;

/**
 * Counters in Redis, shared by every rated pointing there. One script updates
 * all rules of a client atomically (their keys share a hash tag, so one
 * cluster slot). On a single server one call counts up to 200 clients; in a
 * cluster, where one call may only touch one slot, each client is a call of
 * its own and the calls of a batch go out together (auto-pipelining, per
 * node). Every key expires once its window is over.
 */
export class RedisCounterStore implements CounterStore {
  private readonly ruleArgs: Array<string | number>;
  private readonly perCall: number;

  constructor(
    readonly rules: readonly StoreRule[],
    private readonly link: Pick<RedisLink, 'mode' | 'run' | 'del'>,
    private readonly keys: RedisKeys,
  ) {
    this.ruleArgs = [rules.length];
    for (const r of rules) this.ruleArgs.push(r.window.windowMs, r.window.buckets, r.limit, counterTtlMs(r));
    this.perCall = link.mode === 'cluster' ? 1 : CLIENTS_PER_CALL;
  }

  /** Rejects (with the first error) when any request could not be counted. */
  async count(batch: readonly CountRequest[]): Promise<CountResult[]> {
    if (this.rules.length === 0) return batch.map(() => ({ counts: [], tripped: false }));
    const calls: Array<Promise<CountResult[]>> = [];
    for (let i = 0; i < batch.length; i += this.perCall) calls.push(this.countSome(batch.slice(i, i + this.perCall)));
    return (await Promise.all(calls)).flat();
  }

  async forget(client: string): Promise<void> {
    await this.link.del(this.keysOf(client));
  }

  async close(): Promise<void> {
    // The link belongs to whoever made it.
  }

  /** The counter keys of a client, one per rule. */
  keysOf(client: string): string[] {
    return this.rules.map((r) => this.keys.counter(client, r.name));
  }

  private async countSome(requests: readonly CountRequest[]): Promise<CountResult[]> {
    const keys: string[] = [];
    const args = [...this.ruleArgs];
    for (const req of requests) {
      keys.push(...this.keysOf(req.client));
      args.push(Math.floor(req.at));
      for (let i = 0; i < this.rules.length; i++) args.push(req.hits[i] ?? 0);
    }
    const reply = await this.link.run(COUNT_SCRIPT, keys, args);
    const width = this.rules.length + 1;
    if (!Array.isArray(reply) || reply.length !== requests.length * width) {
      throw new Error(`unexpected reply from the counting script: ${JSON.stringify(reply).slice(0, 100)}`);
    }
    const out: CountResult[] = [];
    for (let c = 0; c < requests.length; c++) {
      const slice = reply.slice(c * width, (c + 1) * width).map(Number);
      out.push({ tripped: slice[0] === 1, counts: slice.slice(1) });
    }
    return out;
  }
}
