// Several web servers, one defence: daemons in their own network namespaces
// share counters and blocks through a real redis-server, then through a real
// three-master Redis Cluster, both started by this test in a namespace of
// their own. We assert what users see: hits add up across servers, every
// firewall drops the offender, a server started later adopts the block, and
// unblock, block and flush on one server act on all of them.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { missingPrereqs, prereqsMet } from '../../helpers/prereq.js';
import { MAIN_JS, type Rated } from '../../helpers/rated.js';
import { startRedis, startRedisCluster, type RedisServer } from '../../helpers/redis.js';
import { createLab, list, metricsText, notify, reachable, RULE, setElements, status, waitListed, type Lab } from '../../helpers/redis-lab.js';
import { waitFor } from '../../helpers/wait-for.js';
import { cleanUp } from '../../helpers/cleanup.js';

const TOOLS = ['ip', 'nft', 'curl', 'ping', 'redis-server', 'redis-cli'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;

interface Setup {
  readonly lab: Lab;
  /** The `redis:` section every server gets. */
  readonly redis: string;
  /** redis-cli against the server holding the shared blocks. */
  readonly cli: (args: readonly string[]) => Promise<string>;
}

/** The scenario, the same for one Redis server and for a cluster. */
function scenario(mode: string, setup: () => Promise<Setup>, teardown: () => Promise<unknown>): void {
  describe(`rated shares counters and blocks through ${mode}`, { skip: SKIP }, () => {
    let s: Setup;
    const daemons = new Map<string, Rated>();
    const d = (name: string): Rated => {
      const r = daemons.get(name);
      assert.ok(r, `daemon ${name} is running`);
      return r;
    };
    const ns = (name: string) => {
      const server = s.lab.servers.get(name);
      assert.ok(server);
      return server;
    };
    const bad = (): string => s.lab.offenderAddress;
    const logs = (): string => [...daemons].map(([n, r]) => `--- ${n} ---\n${r.output(25)}`).join('\n');

    before(async () => {
      assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first`);
      s = await setup();
      for (const name of ['a', 'b']) daemons.set(name, await s.lab.start(name, s.redis));
    });

    after(async () => {
      await teardown();
    });

    test('both daemons say they are connected to Redis', async () => {
      for (const name of ['a', 'b']) {
        assert.deepEqual(d(name).started.redis, { mode: mode.includes('Cluster') ? 'cluster' : 'standalone', up: true }, logs());
        const st = await status(d(name));
        assert.equal(st.redis?.up, true);
        assert.equal(st.redis?.mode, mode.includes('Cluster') ? 'cluster' : 'standalone');
        assert.ok(!JSON.stringify(st.redis).includes('secret'), `no password in status: ${JSON.stringify(st.redis?.url)}`);
      }
      for (const name of ['a', 'b']) assert.equal(await reachable(s.lab.offender, ns(name).address), true, `the offender reaches ${name} before any block`);
    });

    test('hits spread over two servers add up to one limit', async () => {
      // limit 5: three on a are under it, everywhere.
      await notify(ns('a').ns, bad(), 3);
      await waitFor(async () => ((await status(d('a'))).redis?.counting.hits ?? 0) >= 3, { what: 'a to share its 3 hits' });
      for (const name of ['a', 'b']) assert.deepEqual(await list(d(name)), [], `no block on ${name} after 3 hits`);
      // Three more on b make 6 in the shared count; b alone saw only 3.
      await notify(ns('b').ns, bad(), 3);
      const onB = await waitListed(d('b'), bad());
      assert.equal(onB?.source, 'rule', 'b, where the limit was crossed, decided it');
      assert.equal(onB?.rule, RULE.name);
      assert.ok((onB?.hits ?? 0) > RULE.limit, `hits ${String(onB?.hits)}`);
      const onA = await waitListed(d('a'), bad());
      assert.equal(onA?.source, 'cluster', 'a enforces it as a cluster block');
      assert.equal(onA?.rule, RULE.name);
      const apart = Math.abs(Date.parse(onA?.expires ?? '') - Date.parse(onB?.expires ?? ''));
      assert.ok(apart < 1000, `with the same expiry: ${String(onA?.expires)} and ${String(onB?.expires)}`);
    });

    test('both firewalls drop the offender', async () => {
      for (const name of ['a', 'b']) {
        await waitFor(async () => (await setElements(ns(name).ns)).includes(bad()), { what: `${bad()} in ${name}'s set` });
        assert.equal(await reachable(s.lab.offender, ns(name).address), false, `${name} drops the offender`);
      }
    });

    test('the shared counters of the offender are gone and every key left has a time to live', async () => {
      const keys = (await s.cli(['--scan', '--pattern', `${prefix}*`])).split('\n').filter(Boolean);
      assert.ok(!keys.some((k) => k.includes(`{${bad()}}`)), `no counter of ${bad()}: ${keys.join(' ')}`);
      for (const key of keys) {
        const ttl = Number(await s.cli(['PTTL', key]));
        assert.ok(ttl > 0, `${key} has a time to live (PTTL ${ttl})`);
      }
    });

    test('a daemon started later adopts the block before it says it started', async () => {
      const c = await s.lab.start('c', s.redis);
      daemons.set('c', c);
      const onC = (await list(c)).find((b) => b.ip === bad());
      assert.ok(onC, `c lists ${bad()} at once: ${JSON.stringify(await list(c))}\n${c.output(20)}`);
      assert.equal(onC.source, 'cluster');
      await waitFor(async () => (await setElements(ns('c').ns)).includes(bad()), { what: `${bad()} in c's set` });
      assert.equal(await reachable(s.lab.offender, ns('c').address), false, 'c drops the offender');
    });

    test('unblock on one daemon lifts the block on all of them', async () => {
      const r = await d('a').cli(['unblock', bad()]);
      assert.equal(r.code, 0, r.stderr);
      for (const name of ['a', 'b', 'c']) {
        await waitListed(d(name), bad(), false);
        await waitFor(() => reachable(s.lab.offender, ns(name).address), { what: `the offender to reach ${name} again`, timeoutMs: 10_000 });
      }
    });

    test('a manual block on one daemon is enforced on all; flush on another lifts it everywhere', async () => {
      const r = await d('c').cli(['block', '203.0.113.0/24', '--for', '1h', '--reason', 'scanner']);
      assert.equal(r.code, 0, r.stderr);
      for (const name of ['a', 'b']) {
        const b = await waitListed(d(name), '203.0.113.0/24');
        assert.equal(b?.source, 'cluster');
        assert.equal(b?.reason, 'scanner');
        await waitFor(async () => (await setElements(ns(name).ns)).includes('203.0.113.0/24'), { what: `the /24 in ${name}'s set` });
      }
      assert.equal((await list(d('c'))).find((b) => b.ip === '203.0.113.0/24')?.source, 'manual', 'c keeps it as its own manual block');

      const flushed = await d('b').cli(['flush', '--yes']);
      assert.equal(flushed.code, 0, flushed.stderr);
      for (const name of ['a', 'b', 'c']) {
        await waitFor(async () => (await list(d(name))).length === 0, { what: `${name}'s list to be empty`, timeoutMs: 10_000 }).catch(async (err: unknown) => {
          throw new Error(`${(err as Error).message}: ${JSON.stringify(await list(d(name)))}\n${logs()}`, { cause: err });
        });
        await waitFor(async () => (await setElements(ns(name).ns)).length === 0, { what: `${name}'s set to be empty` });
      }
    });

    test('an offender blocked on one server alone is dropped by all', async () => {
      // Six hits on a alone: its own counters and the shared ones both see them.
      await notify(ns('a').ns, bad(), RULE.limit + 1);
      for (const name of ['a', 'b', 'c']) await waitListed(d(name), bad());
      const sources = await Promise.all(['a', 'b', 'c'].map(async (n) => (await list(d(n))).find((b) => b.ip === bad())?.source));
      assert.deepEqual(sources, ['rule', 'cluster', 'cluster'], logs());
      for (const name of ['a', 'b', 'c']) {
        await waitFor(async () => !(await reachable(s.lab.offender, ns(name).address)), { what: `${name} to drop the offender` });
      }
    });

    test('the metrics show Redis up and blocks per source', async () => {
      for (const name of ['a', 'b', 'c']) {
        const text = await metricsText(s.lab.socket(name));
        assert.match(text, /^rated_redis_up 1$/m, `${name}: rated_redis_up 1`);
        assert.match(text, /^rated_blocks_total\{rule="flood",source="cluster"\} [1-9]/m, `${name} counts cluster blocks`);
      }
    });
  });
}

const prefix = `rt${process.pid}:`;

let standalone: { lab: Lab; redis: RedisServer } | null = null;
scenario('one Redis server', async () => {
  const lab = await createLab(['a', 'b', 'c']);
  const redis = await startRedis({ namespace: lab.hub, host: lab.hubAddress, port: 6379, password: 'secret' });
  standalone = { lab, redis };
  return { lab, redis: `{ url: "redis://:secret@${lab.hubAddress}:6379/0", prefix: "${prefix}", timeout: 500ms }`, cli: (a) => redis.cli(a) };
}, async () => {
  await cleanUp([() => standalone?.lab.cleanup(), () => standalone?.redis.stop()]);
});

let clustered: { lab: Lab; stop: () => Promise<void> } | null = null;
scenario('a three-master Redis Cluster', async () => {
  const lab = await createLab(['a', 'b', 'c']);
  const cluster = await startRedisCluster({ namespace: lab.hub, host: lab.hubAddress, ports: [7001, 7002, 7003] });
  clustered = { lab, stop: () => cluster.stop() };
  const urls = cluster.urls.map((u) => `"${u}"`).join(', ');
  // The shared blocks live on one slot; redis-cli -c follows redirections for the checks.
  const holder = cluster.nodes[0];
  assert.ok(holder);
  return { lab, redis: `{ cluster: [${urls}], prefix: "${prefix}", timeout: 500ms }`, cli: async (a) => {
    if (a[0] === '--scan') {
      const all = await Promise.all(cluster.nodes.map((n) => n.cli(a)));
      return all.join('\n');
    }
    return holder.cli(['-c', ...a]);
  } };
}, async () => {
  await cleanUp([() => clustered?.lab.cleanup(), () => clustered?.stop()]);
});
