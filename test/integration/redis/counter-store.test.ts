// The Redis counter store against the counter-store contract, on a real
// redis-server and on a real three-master Redis Cluster started here, plus
// what only a shared store has: several nodes adding up, keys that expire,
// one cluster slot per client.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { WindowSpec } from '../../../src/limit/sliding-window.js';
import { createLogger } from '../../../src/log.js';
import { Metrics } from '../../../src/metrics.js';
import { RedisLink, type RedisConfig } from '../../../src/redis/connection.js';
import { counterTtlMs, RedisCounterStore } from '../../../src/limit/redis-counter-store.js';
import { keySlot, RedisKeys } from '../../../src/redis/keys.js';
import type { CounterStore, StoreRule } from '../../../src/limit/counter-store.js';
import { counterStoreContract } from '../../helpers/counter-store-contract.js';
import { prereqsMet } from '../../helpers/prereq.js';
import { startRedis, startRedisCluster, type RedisCluster, type RedisServer } from '../../helpers/redis.js';

const TOOLS = ['redis-server', 'redis-cli'];
const SKIP = prereqsMet(TOOLS, false) ? false : `needs ${TOOLS.join(' and ')} on PATH`;
const T0 = 1_700_000_000_000;

let stores = 0;

/** A store on its own prefix (nothing else on the server is touched), closing its link with it. */
async function makeStore(config: Omit<RedisConfig, 'prefix' | 'timeout' | 'syncInterval'>, rules: readonly StoreRule[]): Promise<CounterStore & { keys: RedisKeys; link: RedisLink }> {
  const prefix = `t${process.pid}-${++stores}:`;
  const keys = new RedisKeys(prefix);
  const link = new RedisLink({
    config: { ...config, prefix, timeout: 2000, syncInterval: 30_000 },
    log: createLogger('silent'),
    metrics: new Metrics({ activeBlocks: () => 0, trackedClients: () => 0 }),
    channel: keys.channel,
    onMessage: () => {},
    onUp: () => {},
  });
  assert.ok(await link.waitUp(10_000), `Redis reachable: ${JSON.stringify(link.status())}`);
  const store = new RedisCounterStore(rules, link, keys);
  return Object.assign(store, {
    keys,
    link,
    close: async () => link.close(),
  });
}

describe('Redis counter store on one redis-server', { skip: SKIP }, () => {
  let redis: RedisServer | null = null;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis?.stop();
  });
  const url = (): string => redis?.url ?? '';

  counterStoreContract((rules) => makeStore({ url: url() }, rules));

  test('hits counted by two nodes add up to one limit', async () => {
    const rules = [{ name: 'r', limit: 5, window: new WindowSpec(10_000) }];
    const a = await makeStore({ url: url() }, rules);
    try {
      // A second node: its own connection, the same prefix.
      const other = await makeStore({ url: url() }, rules);
      const shared = new RedisCounterStore(rules, other.link, a.keys);
      try {
        for (let i = 0; i < 3; i++) assert.equal((await a.count([{ client: '192.0.2.9', at: T0 + i, hits: [1] }]))[0]?.tripped, false);
        assert.deepEqual((await shared.count([{ client: '192.0.2.9', at: T0 + 3, hits: [2] }]))[0], { counts: [5], tripped: false });
        assert.deepEqual((await a.count([{ client: '192.0.2.9', at: T0 + 4, hits: [1] }]))[0], { counts: [6], tripped: true });
      } finally {
        await other.close();
      }
    } finally {
      await a.close();
    }
  });

  test('every counter key has a time to live no longer than its window needs', async () => {
    const rules = [{ name: 'short', limit: 100, window: new WindowSpec(10_000) }, { name: 'long', limit: 100, window: new WindowSpec(7_200_000) }];
    const s = await makeStore({ url: url() }, rules);
    try {
      await s.count([{ client: '192.0.2.7', at: Date.now(), hits: [1, 1] }]);
      for (const [i, r] of rules.entries()) {
        const key = s.keys.counter('192.0.2.7', r.name);
        const ttl = Number(await redis?.cli(['PTTL', key]));
        assert.ok(ttl > 0 && ttl <= counterTtlMs(rules[i] as StoreRule), `${key}: PTTL ${ttl}`);
        assert.ok(ttl > r.window.windowMs, `${key} outlives its window: PTTL ${ttl}`);
      }
    } finally {
      await s.close();
    }
  });

  test('a trip deletes every counter of the client in Redis', async () => {
    const rules = [{ name: 'a', limit: 1, window: new WindowSpec(10_000) }, { name: 'b', limit: 100, window: new WindowSpec(10_000) }];
    const s = await makeStore({ url: url() }, rules);
    try {
      await s.count([{ client: '192.0.2.8', at: T0, hits: [1, 1] }]);
      assert.equal(await redis?.cli(['EXISTS', s.keys.counter('192.0.2.8', 'a'), s.keys.counter('192.0.2.8', 'b')]), '2');
      assert.equal((await s.count([{ client: '192.0.2.8', at: T0, hits: [1, 1] }]))[0]?.tripped, true);
      assert.equal(await redis?.cli(['EXISTS', s.keys.counter('192.0.2.8', 'a'), s.keys.counter('192.0.2.8', 'b')]), '0');
    } finally {
      await s.close();
    }
  });
});

describe('Redis counter store on a three-master Redis Cluster', { skip: SKIP }, () => {
  let cluster: RedisCluster | null = null;
  before(async () => {
    cluster = await startRedisCluster();
  });
  after(async () => {
    await cluster?.stop();
  });

  counterStoreContract((rules) => makeStore({ cluster: [...(cluster?.urls ?? [])] }, rules));

  test("a client's keys share one slot; clients spread over the masters", async () => {
    const keys = new RedisKeys('rated:');
    const node = cluster?.nodes[0];
    assert.ok(node);
    const slot = async (key: string): Promise<number> => Number(await node.cli(['CLUSTER', 'KEYSLOT', key]));
    for (const client of ['192.0.2.1', '2001:db8:1::/64']) {
      assert.equal(await slot(keys.counter(client, 'default')), await slot(keys.counter(client, 'login')), client);
    }
    const slots = new Set<number>();
    for (let i = 1; i <= 20; i++) slots.add(await slot(keys.counter(`192.0.2.${i}`, 'default')));
    assert.ok(slots.size > 10, `20 clients on ${slots.size} slots`);
    assert.equal(await slot(keys.blocks), await slot(keys.expires));
    assert.equal(await slot(keys.blocks), await slot(keys.lifted));
    assert.equal(await slot(keys.blocks), await slot(keys.flushed));
    for (const key of [keys.blocks, keys.channel, 'plain', '{}x', 'a{}b{c}', ...Array.from({ length: 30 }, (_, i) => keys.counter(`198.51.100.${i}`, 'r'))]) {
      assert.equal(keySlot(key), await slot(key), key);
    }
  });

  test('a batch of 1,000 clients is counted in a few calls per node, and counts as one call per client would', async () => {
    const rules = [{ name: 'r', limit: 3, window: new WindowSpec(10_000) }, { name: 's', limit: 1000, window: new WindowSpec(60_000) }];
    const store = await makeStore({ cluster: [...(cluster?.urls ?? [])] }, rules);
    const calls: number[] = [];
    const run = store.link.run.bind(store.link);
    store.link.run = async (s, keys, args) => {
      calls.push(keys.length);
      return run(s, keys, args);
    };
    try {
      const clients = Array.from({ length: 1000 }, (_, i) => `10.${i >> 8}.${i & 255}.1`);
      const first = await store.count(clients.map((client, i) => ({ client, hits: [i % 5, 1], at: T0 })));
      assert.ok(calls.length <= 20, `${calls.length} script calls for 1,000 clients on 3 masters`);
      first.forEach((r, i) => {
        assert.deepEqual(r, { tripped: i % 5 > 3, counts: [i % 5, 1] }, clients[i]);
      });
      // Each client's counters moved as its own: a second hit trips exactly those now over 3.
      const second = await store.count(clients.map((client) => ({ client, hits: [1, 0], at: T0 + 1 })));
      second.forEach((r, i) => {
        const before = i % 5 > 3 ? 0 : i % 5;
        assert.equal(r.tripped, before + 1 > 3, `${clients[i]}: ${JSON.stringify(r)}`);
      });
    } finally {
      await store.close();
    }
  });

  test('a group that meets a key of another node (a slot map gone stale) is counted one client at a time, nothing lost or doubled', async () => {
    const rules = [{ name: 'r', limit: 2, window: new WindowSpec(10_000) }];
    const store = await makeStore({ cluster: [...(cluster?.urls ?? [])] }, rules);
    // A slot map that puts every client on one node: Redis refuses the group before writing anything.
    store.link.nodeOf = () => 'stale:0';
    try {
      const clients = Array.from({ length: 50 }, (_, i) => `10.9.0.${i + 1}`);
      const first = await store.count(clients.map((client) => ({ client, hits: [2], at: T0 })));
      assert.ok(first.every((r) => !r.tripped && r.counts[0] === 2), JSON.stringify(first.slice(0, 3)));
      const second = await store.count(clients.map((client) => ({ client, hits: [1], at: T0 + 1 })));
      assert.ok(second.every((r) => r.tripped && r.counts[0] === 3), JSON.stringify(second.slice(0, 3)));
    } finally {
      await store.close();
    }
  });
});
