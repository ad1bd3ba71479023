import type { CounterStore, CountRequest, CountResult, StoreRule } from './counter-store.js';
import { script, type RedisLink, type Script } from '../redis/connection.js';
import type { RedisKeys } from '../redis/keys.js';
import { COUNT, countOnNode } from '../redis/scripts.js';

const COUNT_SCRIPT: Script = script(COUNT);
const COUNT_ON_NODE: Script = script(countOnNode(COUNT));

/** Slack on every counter's time to live, for clocks of different nodes that disagree a little. */
const TTL_MARGIN_MS = 2000;

/** How long a counter must outlive its last hit: until its newest bucket has left the window. */
export function counterTtlMs(rule: StoreRule): number {
  const w = rule.window;
  return Math.ceil((w.windowMs * (w.buckets + 1)) / w.buckets) + TTL_MARGIN_MS;
}

/** Clients per script call: one round trip and one script run for many clients. */
const CLIENTS_PER_CALL = 200;

/** Replies that say a node-grouped call met a key of another node (a slot moving), or a Redis without script flags. */
const REGROUP = /CROSSSLOT|non local key|MOVED|ASK|shebang|flags|Unknown lua|Error compiling script/i;

/**
 * Counters in Redis, shared by every rated pointing there. One script updates
 * all rules of a client atomically (their keys share a hash tag, so one
 * cluster slot). On a single server one call counts up to 200 clients. In a
 * cluster the clients of a batch are grouped by the node that holds their
 * slot and each group is counted with one call per 200 clients (Redis 7's
 * cross-slot scripts, see countOnNode); when a group meets a slot that moved,
 * or Redis is older, its clients are counted one call each, as the slot map
 * routes them. Every key expires once its window is over.
 */
export class RedisCounterStore implements CounterStore {
  private readonly ruleArgs: Array<string | number>;
  /** False once the cluster refused node-grouped calls for good (Redis before 7). */
  private grouping = true;

  constructor(
    readonly rules: readonly StoreRule[],
    private readonly link: Pick<RedisLink, 'mode' | 'run' | 'del' | 'nodeOf'>,
    private readonly keys: RedisKeys,
  ) {
    this.ruleArgs = [rules.length];
    for (const r of rules) this.ruleArgs.push(r.window.windowMs, r.window.buckets, r.limit, counterTtlMs(r));
  }

  /** Rejects (with the first error) when any request could not be counted. */
  async count(batch: readonly CountRequest[]): Promise<CountResult[]> {
    if (this.rules.length === 0) return batch.map(() => ({ counts: [], tripped: false }));
    if (this.link.mode !== 'cluster') {
      const calls: Array<Promise<CountResult[]>> = [];
      for (let i = 0; i < batch.length; i += CLIENTS_PER_CALL) calls.push(this.countSome(batch.slice(i, i + CLIENTS_PER_CALL), false));
      return (await Promise.all(calls)).flat();
    }
    // Group by node; a client whose node is not known yet is counted alone.
    const groups = new Map<string, number[]>();
    const alone: number[] = [];
    batch.forEach((req, i) => {
      const node = this.grouping ? this.link.nodeOf(this.keysOf(req.client)[0] ?? '') : null;
      if (node === null) { alone.push(i); return; }
      let g = groups.get(node);
      if (!g) groups.set(node, (g = []));
      g.push(i);
    });
    const out = new Array<CountResult>(batch.length);
    const calls: Array<Promise<void>> = [];
    const one = (i: number): Promise<void> => this.countSome([batch[i] as CountRequest], false).then(([r]) => { out[i] = r as CountResult; });
    for (const i of alone) calls.push(one(i));
    for (const g of groups.values()) {
      for (let k = 0; k < g.length; k += CLIENTS_PER_CALL) {
        const idx = g.slice(k, k + CLIENTS_PER_CALL);
        calls.push(this.countSome(idx.map((i) => batch[i] as CountRequest), true).then((rs) => {
          rs.forEach((r, j) => { out[idx[j] as number] = r; });
        }, async (err: unknown) => {
          if (!(err instanceof Error && REGROUP.test(err.message))) throw err;
          if (/shebang|flags|Unknown lua|Error compiling script/i.test(err.message)) this.grouping = false;
          await Promise.all(idx.map(one));
        }));
      }
    }
    await Promise.all(calls);
    return out;
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

  private async countSome(requests: readonly CountRequest[], onNode: boolean): Promise<CountResult[]> {
    const keys: string[] = [];
    const args = [...this.ruleArgs];
    for (const req of requests) {
      keys.push(...this.keysOf(req.client));
      args.push(Math.floor(req.at));
      for (let i = 0; i < this.rules.length; i++) args.push(req.hits[i] ?? 0);
    }
    const reply = onNode
      ? await this.link.run(COUNT_ON_NODE, keys.slice(0, 1), [keys.length, ...keys, ...args])
      : await this.link.run(COUNT_SCRIPT, keys, args);
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
