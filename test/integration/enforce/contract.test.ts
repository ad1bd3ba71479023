// What every backend promises (enforce/backend.ts), checked against each of
// them: nftables, ipset and iptables for real inside a network namespace this
// file creates and deletes, and dry-run, which must decide and list alike
// and never drop a packet. Backend-specific layouts are tested beside it.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend, BackendKind } from '../../../src/enforce/backend.js';
import { Blocker } from '../../../src/enforce/blocker.js';
import { makeBackend } from '../../../src/enforce/index.js';
import { createLogger } from '../../../src/log.js';
import { Metrics } from '../../../src/metrics.js';
import { cleanUp } from '../../helpers/cleanup.js';
import { net } from '../../helpers/net.js';
import { createNamespace, veth, type Namespace } from '../../helpers/netns.js';
import { prereqsMet, requireRoot, requireTools } from '../../helpers/prereq.js';
import { waitFor } from '../../helpers/wait-for.js';

const FIREWALL = {
  backend: 'auto', table: 'rated', hook: 'input', priority: -10, checkInterval: 30_000, flushOnExit: false, maxBlocks: 65_536,
} as const;

const TOOLS: Record<BackendKind, string[]> = {
  nftables: ['nft'],
  ipset: ['ipset', 'iptables', 'ip6tables'],
  iptables: ['iptables', 'ip6tables'],
  'dry-run': [],
};

/** Empties what any backend may have left in the namespace. */
async function reset(ns: Namespace): Promise<void> {
  await ns.exec('nft', ['flush', 'ruleset']);
  for (const tool of ['iptables', 'ip6tables']) {
    await ns.exec(tool, ['-w', '-F']);
    await ns.exec(tool, ['-w', '-X']);
  }
  await ns.exec('ipset', ['destroy']);
}

const metrics = (): Metrics => new Metrics({ activeBlocks: () => 0, trackedClients: () => 0 });

for (const kind of ['nftables', 'ipset', 'iptables', 'dry-run'] as const) {
  describe(`backend contract: ${kind}`, () => {
    let ns: Namespace | undefined;
    let peer: Namespace | undefined;
    const tools = [...TOOLS[kind], 'ip', 'ping'];

    before(async () => {
      if (!prereqsMet(tools)) return;
      ns = await createNamespace(`rtc-${kind.slice(0, 4)}`);
      peer = await createNamespace(`rtc-${kind.slice(0, 4)}p`);
      await veth(ns, peer, { a: '192.0.2.1/24', b: '192.0.2.2/24', a6: '2001:db8:ff::1/64', b6: '2001:db8:ff::2/64' });
    });

    after(() => cleanUp([() => peer?.delete(), () => ns?.delete()]));

    /** A fresh backend of this kind in an emptied namespace, or null when the test was skipped. */
    async function fresh(t: TestContext): Promise<Backend | null> {
      if (!requireRoot(t) || !requireTools(t, tools)) return null;
      assert.ok(ns, 'the namespace was created');
      await reset(ns);
      const backend = makeBackend(kind, FIREWALL, ns.runner, 64);
      await backend.probe();
      await backend.ensure();
      return backend;
    }

    test('ensure twice leaves one intact structure', async (t) => {
      const backend = await fresh(t);
      if (!backend) return;
      await backend.ensure();
      assert.equal((await backend.check()).intact, true);
      assert.deepEqual(await backend.list(), []);
    });

    test('adds reach the kernel with their time; deletes, also of absent elements, take them out', async (t) => {
      const backend = await fresh(t);
      if (!backend) return;
      const targets = ['198.51.100.7', '203.0.113.0/24', '2001:db8:1:2::/64'];
      const before = Date.now();
      for (const text of targets) backend.add(net(text), 300_000, false);
      assert.deepEqual(await backend.commit(), { applied: 3, failed: [] });
      const listed = await backend.list();
      assert.deepEqual(listed.map((e) => e.net.text).sort(), [...targets].sort());
      for (const e of listed) {
        if (!backend.expiresInKernel) assert.equal(e.expiresAt, null, `${e.net.text}: no kernel expiry`);
        else assert.ok(e.expiresAt !== null && e.expiresAt > before + 295_000 && e.expiresAt <= Date.now() + 301_000, `${e.net.text} expires in about 300 s`);
      }
      backend.delete(net('198.51.100.7'));
      backend.delete(net('198.51.100.99'));
      assert.deepEqual(await backend.commit(), { applied: 2, failed: [] }, 'a delete of an absent element is no error');
      assert.deepEqual((await backend.list()).map((e) => e.net.text).sort(), ['2001:db8:1:2::/64', '203.0.113.0/24']);
    });

    test('an add that replaces renews the time of an element already there', async (t) => {
      const backend = await fresh(t);
      if (!backend) return;
      backend.add(net('198.51.100.8'), 60_000, false);
      await backend.commit();
      backend.add(net('198.51.100.8'), 600_000, true);
      assert.deepEqual(await backend.commit(), { applied: 1, failed: [] });
      const [e] = await backend.list();
      assert.equal(e?.net.text, '198.51.100.8');
      if (backend.expiresInKernel) assert.ok((e?.expiresAt ?? 0) > Date.now() + 500_000, 'the longer time is in force');
      assert.equal((await backend.list()).length, 1, 'one element, no duplicate');
    });

    test('flush empties what we manage and keeps the structure', async (t) => {
      const backend = await fresh(t);
      if (!backend) return;
      for (let i = 1; i <= 20; i++) backend.add(net(`198.51.100.${i}`), 60_000, false);
      backend.add(net('2001:db8:9::/64'), 60_000, false);
      await backend.commit();
      const n = await backend.flush();
      assert.ok(n === null || n === 21, `flush reports what it lifted, or null (${n})`);
      assert.deepEqual(await backend.list(), []);
      assert.equal((await backend.check()).intact, true);
    });

    test('a new Blocker adopts what it finds as reconciled', async (t) => {
      const backend = await fresh(t);
      if (!backend) return;
      backend.add(net('198.51.100.9'), 120_000, false);
      await backend.commit();
      const blocker = new Blocker({
        backend, isAllowed: () => false, log: createLogger('silent'), metrics: metrics(), reconciledBlockMs: 3_600_000,
      });
      try {
        const r = await blocker.resync(true);
        assert.equal(r.adopted, 1);
        const b = blocker.get(net('198.51.100.9'));
        assert.equal(b?.source, 'reconciled');
        assert.ok(b?.expires !== null && b !== undefined, 'it ends: with the kernel expiry, or after the configured block time');
      } finally {
        await blocker.close();
      }
    });

    test('packets: a blocked peer cannot ping, and can again once lifted; what was dropped is counted', async (t) => {
      const backend = await fresh(t);
      if (!backend || !peer) return;
      const ping = async (target: string): Promise<boolean> => (await peer!.exec('ping', ['-n', '-c1', '-W1', target])).exitCode === 0;
      await waitFor(() => ping('192.0.2.1'), { timeoutMs: 10_000, what: 'the peer to reach us over IPv4 before the block' });
      await waitFor(() => ping('2001:db8:ff::1'), { timeoutMs: 10_000, what: 'the peer to reach us over IPv6 before the block' });
      // The IPv6 peer blocked as its client, the /64.
      backend.add(net('192.0.2.2'), 60_000, false);
      backend.add(net('2001:db8:ff::/64'), 60_000, false);
      assert.deepEqual(await backend.commit(), { applied: 2, failed: [] });
      const blocked = kind !== 'dry-run';
      assert.equal(await ping('192.0.2.1'), !blocked, blocked ? 'IPv4 ping of a blocked peer fails' : 'a dry run drops nothing');
      assert.equal(await ping('2001:db8:ff::1'), !blocked, blocked ? 'IPv6 ping of a blocked /64 fails' : 'a dry run drops nothing');
      const check = await backend.check();
      if (blocked) {
        assert.ok((check.dropped?.ipv4.packets ?? 0) >= 1 && (check.dropped?.ipv4.bytes ?? 0) >= 84, `IPv4 totals: ${JSON.stringify(check.dropped)}`);
        assert.ok((check.dropped?.ipv6.packets ?? 0) >= 1 && (check.dropped?.ipv6.bytes ?? 0) >= 104, `IPv6 totals: ${JSON.stringify(check.dropped)}`);
        const listed = await backend.list();
        if (listed.some((e) => e.dropped !== undefined && e.dropped !== null)) {
          const counted = listed.filter((e) => (e.dropped?.packets ?? 0) > 0).map((e) => e.net.text).sort();
          assert.deepEqual(counted, ['192.0.2.2', '2001:db8:ff::/64'], 'each element counts what it dropped');
        }
      } else {
        assert.equal(check.droppedPackets, null);
      }
      backend.delete(net('192.0.2.2'));
      backend.delete(net('2001:db8:ff::/64'));
      assert.deepEqual(await backend.commit(), { applied: 2, failed: [] });
      assert.equal(await ping('192.0.2.1'), true, 'IPv4 ping works again once the block is lifted');
      assert.equal(await ping('2001:db8:ff::1'), true, 'IPv6 ping works again once the block is lifted');
    });
  });
}
