// The nftables backend and the Blocker against a real `nft`, inside a network
// namespace this file creates and deletes: the host's firewall is never touched.
import { after, before, beforeEach, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { clientKey, parseAddress, type Network } from '../../../src/address.js';
import { NftablesBackend, type NftOptions } from '../../../src/enforce/nftables.js';
import { createNamespace, veth, type Namespace } from '../../helpers/netns.js';
import { prereqsMet, requireRoot, requireTools } from '../../helpers/prereq.js';
import { waitFor } from '../../helpers/wait-for.js';
import { net } from '../../helpers/net.js';
import { blockOfEachKind, counting, makeBlocker } from '../../helpers/blocker.js';

const TOOLS = ['nft', 'ip'];
const OPTS: NftOptions = { table: 'rated', hook: 'input', priority: -10, ipv6Prefix: 64, maxBlocks: 1_048_576 };

let shared: Namespace | undefined;

before(async () => {
  if (prereqsMet(TOOLS)) shared = await createNamespace('rated-nft');
});

after(async () => {
  await shared?.delete();
});

beforeEach(async () => {
  // Our own namespace: every test starts from an empty ruleset.
  await shared?.run('nft', ['flush', 'ruleset']);
});

/** The namespace for a test, or null when the test was skipped for a missing prerequisite. */
function setup(t: TestContext, tools: readonly string[] = []): Namespace | null {
  if (!requireRoot(t) || !requireTools(t, [...TOOLS, ...tools])) return null;
  assert.ok(shared, 'the namespace was created');
  return shared;
}


type Json = Record<string, unknown>;

interface Elem {
  /** `198.51.100.7` or `198.51.100.0/24`. */
  readonly val: string;
  readonly timeout: number | null;
  readonly expires: number | null;
}

async function listJson(ns: Namespace, args: readonly string[]): Promise<Json[]> {
  const r = await ns.run('nft', ['-j', 'list', ...args]);
  return ((JSON.parse(r.stdout) as { nftables?: Json[] }).nftables ?? []).filter((i) => !('metainfo' in i));
}

type SetName = 'v4' | 'v6' | 'v4net' | 'v6net';

/** The elements the kernel holds in one of our sets. */
async function kernelSet(ns: Namespace, set: SetName): Promise<Elem[]> {
  const items = await listJson(ns, ['set', 'inet', OPTS.table, set]);
  const elems = ((items[0]?.set as Json | undefined)?.elem as unknown[] | undefined) ?? [];
  return elems.map((raw) => {
    const e = (typeof raw === 'object' && raw !== null && 'elem' in raw ? (raw as { elem: Json }).elem : { val: raw });
    const v = e.val as string | { prefix: { addr: string; len: number } };
    return {
      val: typeof v === 'string' ? v : `${v.prefix.addr}/${v.prefix.len}`,
      timeout: typeof e.timeout === 'number' ? e.timeout : null,
      expires: typeof e.expires === 'number' ? e.expires : null,
    };
  });
}

/** What the kernel blocks of one family, from its hash set and its interval set; v6 clients written as their /64. */
async function kernelValues(ns: Namespace, family: 'v4' | 'v6'): Promise<string[]> {
  const hash = (await kernelSet(ns, family)).map((e) => (family === 'v6' ? `${e.val}/64` : e.val));
  const nets = (await kernelSet(ns, `${family}net`)).map((e) => e.val);
  return [...hash, ...nets].sort();
}

/** A listing with what legitimately changes between two reads removed (handles, remaining time). */
function normalize(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(normalize);
  if (typeof value !== 'object' || value === null) return value;
  const out: Json = {};
  for (const [k, v] of Object.entries(value)) if (k !== 'handle' && k !== 'expires') out[k] = normalize(v);
  return out;
}

/** A foreign table in the same namespace, with a set named like ours and an element in it. */
const HOSTFW = `table inet hostfw {
  set v4 {
    type ipv4_addr
    elements = { 192.0.2.10 }
  }
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 22 counter accept
    ip saddr @v4 counter drop
  }
}
`;

async function createHostfw(ns: Namespace): Promise<string> {
  await ns.run('nft', ['-f', '-'], HOSTFW);
  return (await ns.run('nft', ['-j', 'list', 'table', 'inet', 'hostfw'])).stdout;
}

async function hostfw(ns: Namespace): Promise<string> {
  return (await ns.run('nft', ['-j', 'list', 'table', 'inet', 'hostfw'])).stdout;
}



test('ensure creates our table, sets and chain; twice changes nothing; a foreign table is untouched', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const foreign = await createHostfw(ns);
  const backend = new NftablesBackend(ns.runner, OPTS);
  assert.deepEqual(await backend.check(), { intact: false, droppedPackets: null });

  await backend.ensure();
  const items = await listJson(ns, ['table', 'inet', 'rated']);
  const sets = items.flatMap((i) => (i.set ? [i.set as Json] : []));
  assert.deepEqual(
    sets.map((s) => [s.name, s.type, s.flags, s.size, s['gc-interval']]),
    [
      // The hash sets are walked for expired elements every 30 s: the default second costs a CPU 70–80 ms per walk at 1,000,000.
      ['v4', 'ipv4_addr', ['timeout'], 1_048_576, 30], ['v6', 'ipv6_addr', ['timeout'], 1_048_576, 30],
      ['v4net', 'ipv4_addr', ['interval', 'timeout'], 1_048_576, undefined], ['v6net', 'ipv6_addr', ['interval', 'timeout'], 1_048_576, undefined],
    ],
  );
  const chains = items.flatMap((i) => (i.chain ? [i.chain as Json] : []));
  assert.equal(chains.length, 1);
  assert.deepEqual(
    [chains[0]?.name, chains[0]?.type, chains[0]?.hook, chains[0]?.prio, chains[0]?.policy],
    ['block', 'filter', 'input', -10, 'accept'],
  );
  const rules = items.flatMap((i) => (i.rule ? [i.rule as { chain: string; expr: Json[] }] : []));
  assert.deepEqual(rules.map((r) => r.chain), ['block', 'block', 'block', 'block']);
  assert.deepEqual(rules.map((r) => JSON.stringify(r.expr).match(/"@(v[46](net)?)"/)?.[1]), ['v4', 'v4net', 'v6', 'v6net']);
  assert.ok(rules.every((r) => r.expr.some((e) => 'drop' in e) && r.expr.some((e) => 'counter' in e)), 'every rule counts and drops');
  assert.deepEqual(await backend.check(), { intact: true, droppedPackets: 0, dropped: { ipv4: { packets: 0, bytes: 0 }, ipv6: { packets: 0, bytes: 0 } } });

  backend.add(net('198.51.100.7'), 600_000, false);
  assert.deepEqual(await backend.commit(), { applied: 1, failed: [] });
  const once = normalize(await listJson(ns, ['ruleset']));
  await backend.ensure();
  assert.deepEqual(normalize(await listJson(ns, ['ruleset'])), once, 'a second ensure changes nothing');
  assert.deepEqual(await kernelValues(ns, 'v4'), ['198.51.100.7'], 'ensure keeps our elements');

  // Emptied with one `flush set` per set, without reading the elements: the count is not known.
  assert.equal(await backend.flush(), null);
  assert.deepEqual(await kernelValues(ns, 'v4'), []);
  assert.equal((await backend.check()).intact, true, 'flush keeps the structure');
  assert.equal(await hostfw(ns), foreign, 'the foreign table, its rules and its set named v4 are untouched');
});

test('1000 distinct addresses go to the kernel in one nft process, each with a timeout', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const count = counting(ns.runner);
  const backend = new NftablesBackend(count.runner, OPTS);
  await backend.ensure();
  const texts = Array.from({ length: 1000 }, (_, i) => `10.20.${Math.floor(i / 250)}.${(i % 250) + 1}`);
  for (const text of texts) backend.add(net(text), 600_000, false);
  assert.equal(backend.pending(), 1000);

  count.reset();
  const started = performance.now();
  const result = await backend.commit();
  const ms = performance.now() - started;
  console.log(`nftables: 1000-element batch committed in ${ms.toFixed(1)} ms`);
  assert.deepEqual(result, { applied: 1000, failed: [] });
  assert.equal(count.calls(), 1, 'one nft process for the whole batch');
  assert.equal(count.starts(), 0, 'a batch this large is not sent through the long-lived nft');

  const elems = await kernelSet(ns, 'v4');
  assert.equal(elems.length, 1000);
  assert.deepEqual(elems.map((e) => e.val).sort(), [...texts].sort());
  for (const e of elems) {
    assert.equal(e.timeout, 600, `${e.val} has the block's timeout`);
    assert.ok(e.expires !== null && e.expires > 590 && e.expires <= 600, `${e.val} expires in ${e.expires}s`);
  }
  assert.equal((await backend.list()).length, 1000);
});

test('single changes go through one long-lived nft: they land with their timeouts, a refused one is reported, a killed nft is replaced', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const children: ChildProcess[] = [];
  const start = ns.runner.start;
  assert.ok(start, 'the runner can start a long-lived tool');
  const count = counting(Object.assign((file: string, args: readonly string[], input?: string) => ns.runner(file, args, input), {
    start: (...a: Parameters<typeof start>) => {
      const child = start(...a);
      children.push(child);
      return child;
    },
  }));
  const backend = new NftablesBackend(count.runner, OPTS);
  try {
    await backend.ensure();
    count.reset();
    for (let i = 1; i <= 20; i++) {
      backend.add(net(`198.51.100.${i}`), i * 60_000, false);
      assert.deepEqual(await backend.commit(), { applied: 1, failed: [] });
    }
    backend.add(net('198.51.100.1'), 7_200_000, true);
    backend.delete(net('198.51.100.2'));
    assert.deepEqual(await backend.commit(), { applied: 2, failed: [] });
    assert.equal(count.calls('nft'), 0, 'no nft process for a small change');
    assert.equal(count.starts(), 1, 'one long-lived nft for all of them');
    const elems = new Map((await kernelSet(ns, 'v4')).map((e) => [e.val, e.timeout]));
    assert.equal(elems.size, 19);
    assert.equal(elems.get('198.51.100.1'), 7200, 'the renewal replaced the timeout');
    assert.equal(elems.has('198.51.100.2'), false, 'the delete landed');
    assert.equal(elems.get('198.51.100.20'), 1200);

    // Bypasses the validator on purpose: nft refuses it, and the session goes on.
    const poison: Network = { family: 4, value: 0n, prefix: 32, text: '999.1.1.1' };
    backend.add(poison, 60_000, false);
    const refused = await backend.commit();
    assert.equal(refused.applied, 0);
    assert.match(refused.failed[0]?.error ?? '', /Error/, 'the refusal carries nft\'s message');
    backend.add(net('198.51.100.30'), 60_000, false);
    assert.deepEqual(await backend.commit(), { applied: 1, failed: [] });
    assert.equal(count.starts(), 1, 'a refused document does not end the session');

    const first = children[0];
    assert.ok(first?.pid !== undefined);
    // The session does not hold the process open; the test waits for the exit, so it does.
    first.ref();
    const gone = once(first, 'exit');
    process.kill(first.pid, 'SIGKILL');
    await gone;
    backend.add(net('198.51.100.31'), 60_000, false);
    assert.deepEqual(await backend.commit(), { applied: 1, failed: [] });
    assert.equal(count.starts(), 2, 'the next change started a new nft');
    assert.ok((await kernelValues(ns, 'v4')).includes('198.51.100.31'));
    assert.equal(count.calls('nft'), 0);
  } finally {
    backend.close();
  }
  const last = children.at(-1);
  if (last && last.exitCode === null && last.signalCode === null) {
    last.ref();
    await once(last, 'exit');
  }
  assert.equal(last?.exitCode, 0, 'nft ends by itself when the session is closed');
});

test('extending a block renews its kernel timeout', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const backend = new NftablesBackend(ns.runner, OPTS);
  await backend.ensure();
  backend.add(net('198.51.100.7'), 60_000, false);
  assert.deepEqual(await backend.commit(), { applied: 1, failed: [] });
  const [first] = await kernelSet(ns, 'v4');
  assert.equal(first?.timeout, 60);
  assert.ok(first.expires !== null && first.expires <= 60);

  backend.add(net('198.51.100.7'), 3_600_000, true);
  assert.deepEqual(await backend.commit(), { applied: 1, failed: [] });
  const after = await kernelSet(ns, 'v4');
  assert.equal(after.length, 1);
  assert.equal(after[0]?.timeout, 3600);
  assert.ok(after[0].expires !== null && after[0].expires > 3590, `expires in ${after[0].expires}s after the renewal`);
  const [entry] = await backend.list();
  assert.ok(entry?.expiresAt !== null && entry !== undefined && entry.expiresAt > Date.now() + 3_590_000);
});

test('deleting an element that already expired in the kernel does not cost the rest of the batch', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const backend = new NftablesBackend(ns.runner, OPTS);
  await backend.ensure();
  backend.add(net('192.0.2.50'), 1000, false);
  backend.add(net('192.0.2.51'), 60_000, false);
  backend.add(net('192.0.2.53'), 60_000, false);
  assert.deepEqual(await backend.commit(), { applied: 3, failed: [] });
  await waitFor(async () => !(await kernelValues(ns, 'v4')).includes('192.0.2.50'), {
    timeoutMs: 10_000, intervalMs: 100, what: 'the kernel to expire 192.0.2.50',
  });

  backend.delete(net('192.0.2.50'));
  backend.delete(net('192.0.2.51'));
  backend.add(net('192.0.2.52'), 60_000, false);
  backend.add(net('192.0.2.53'), 120_000, true);
  assert.deepEqual(await backend.commit(), { applied: 4, failed: [] });
  const elems = await kernelSet(ns, 'v4');
  assert.deepEqual(elems.map((e) => [e.val, e.timeout]).sort(), [['192.0.2.52', 60], ['192.0.2.53', 120]]);
});

test('a poison element is reported in failed; the good ones of its batch are applied', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const backend = new NftablesBackend(ns.runner, OPTS);
  await backend.ensure();
  const good = ['203.0.113.1', '203.0.113.2', '203.0.113.3', '203.0.113.4', '203.0.113.5', '203.0.113.6', '203.0.113.7'];
  // Bypasses the validator on purpose: nft would read this as a hostname.
  const poison: Network = { family: 4, value: 0n, prefix: 32, text: '999.1.1.1' };
  good.slice(0, 3).forEach((text) => backend.add(net(text), 60_000, false));
  backend.add(poison, 60_000, false);
  good.slice(3).forEach((text) => backend.add(net(text), 60_000, false));

  const result = await backend.commit();
  assert.equal(result.applied, 7);
  assert.equal(result.failed.length, 1);
  assert.equal(result.failed[0]?.net, poison);
  assert.equal(result.failed[0]?.op, 'add');
  assert.ok(result.failed[0]?.error, 'the refusal carries nft\'s message');
  assert.deepEqual(await kernelValues(ns, 'v4'), good);
});

test('an IPv6 /64 client block lands in hash set v6 as its network address', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const backend = new NftablesBackend(ns.runner, OPTS);
  await backend.ensure();
  const addr = parseAddress('2001:db8:1:2:a:b:c:d');
  assert.ok(addr);
  const client = clientKey(addr, 64);
  backend.add(client, 300_000, false);
  assert.deepEqual(await backend.commit(), { applied: 1, failed: [] });

  const items = await listJson(ns, ['set', 'inet', 'rated', 'v6']);
  const elem = ((items[0]?.set as Json).elem as Array<{ elem: Json }>)[0]?.elem;
  assert.equal(elem?.val, '2001:db8:1:2::');
  assert.equal(elem?.timeout, 300);
  assert.deepEqual(await kernelValues(ns, 'v4'), []);
  assert.deepEqual((await backend.list()).map((e) => e.net.text), ['2001:db8:1:2::/64']);
});

test('Blocker: a /24 around a blocked address replaces it in the kernel; lifting the /24 puts it back', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  // Processes only (a plain function has no long-lived nft): each transaction is one call.
  const count = counting((file, args, input) => ns.exec(file, args, input));
  const backend = new NftablesBackend(count.runner, OPTS);
  await backend.ensure();
  const { blocker, metrics } = makeBlocker(backend);
  try {
    blocker.block({ net: net('198.51.100.7'), durationMs: 600_000, source: 'rule', rule: 'flood' });
    await blocker.settle();
    assert.deepEqual(await kernelValues(ns, 'v4'), ['198.51.100.7']);

    count.reset();
    assert.equal(blocker.block({ net: net('198.51.100.0/24'), durationMs: 60_000, source: 'manual' }), 'added');
    await blocker.settle();
    assert.deepEqual(await kernelValues(ns, 'v4'), ['198.51.100.0/24'], 'only the outer network is an element');
    assert.deepEqual((await kernelSet(ns, 'v4net')).map((e) => e.val), ['198.51.100.0/24'], 'a network goes to the interval set');
    assert.equal(count.calls(), 1, 'delete of the inner address and add of the /24 in one transaction, never refused as "interval overlaps"');
    assert.deepEqual(blocker.lastErrors, []);
    assert.equal(metrics.firewallRefused, 0);
    assert.equal(blocker.size, 2);

    count.reset();
    assert.ok(blocker.unblock(net('198.51.100.0/24')));
    await blocker.settle();
    assert.equal(count.calls(), 1, 'delete of the /24 and add of the inner address in one transaction');
    const elems = await kernelSet(ns, 'v4');
    assert.deepEqual(elems.map((e) => e.val), ['198.51.100.7']);
    const inner = blocker.get(net('198.51.100.7'));
    assert.ok(inner?.expires);
    const remaining = (inner.expires - Date.now()) / 1000;
    const expires = elems[0]?.expires ?? 0;
    assert.ok(Math.abs(expires - remaining) <= 2, `kernel expiry ${expires}s matches the remaining ${remaining.toFixed(1)}s`);
    assert.ok(expires > 590, 'the inner block keeps its own, longer time');
    assert.deepEqual(blocker.lastErrors, []);
  } finally {
    await blocker.close();
  }
});

test('Blocker: lifting and re-imposing a /24 in one batch leaves the /24 and no error', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const backend = new NftablesBackend(ns.runner, OPTS);
  await backend.ensure();
  const { blocker, metrics } = makeBlocker(backend);
  try {
    blocker.block({ net: net('198.51.100.7'), durationMs: 600_000, source: 'rule' });
    blocker.block({ net: net('198.51.100.0/24'), durationMs: 60_000, source: 'manual' });
    await blocker.settle();
    assert.deepEqual(await kernelValues(ns, 'v4'), ['198.51.100.0/24']);

    // Same batch: the inner address is queued back, then out again.
    assert.ok(blocker.unblock(net('198.51.100.0/24')));
    assert.equal(blocker.block({ net: net('198.51.100.0/24'), durationMs: 120_000, source: 'manual' }), 'added');
    await blocker.settle();
    const elems = [...await kernelSet(ns, 'v4'), ...await kernelSet(ns, 'v4net')];
    assert.deepEqual(elems.map((e) => [e.val, e.timeout]), [['198.51.100.0/24', 120]]);
    assert.deepEqual(blocker.lastErrors, []);
    assert.equal(metrics.firewallRefused, 0);
    assert.equal(blocker.needsRepair, false);
  } finally {
    await blocker.close();
  }
});

test('Blocker: flush empties our sets only', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const foreign = await createHostfw(ns);
  const backend = new NftablesBackend(ns.runner, OPTS);
  await backend.ensure();
  const { blocker } = makeBlocker(backend);
  try {
    await blockOfEachKind(blocker);
    assert.equal((await kernelValues(ns, 'v4')).length + (await kernelValues(ns, 'v6')).length, 3);

    assert.equal(await blocker.flush(), 3);
    assert.equal(blocker.size, 0);
    assert.deepEqual(await kernelValues(ns, 'v4'), []);
    assert.deepEqual(await kernelValues(ns, 'v6'), []);
    assert.equal((await backend.check()).intact, true, 'our structure stays');
    assert.equal(await hostfw(ns), foreign, 'the foreign table and its elements are untouched');
  } finally {
    await blocker.close();
  }
});

test('Blocker: after `nft flush ruleset`, repair recreates the table and restores the elements', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const backend = new NftablesBackend(ns.runner, OPTS);
  await backend.ensure();
  const { blocker, metrics } = makeBlocker(backend);
  try {
    await blockOfEachKind(blocker, 300_000);

    await ns.run('nft', ['flush', 'ruleset']);
    assert.equal((await backend.check()).intact, false);
    assert.deepEqual(await listJson(ns, ['tables']), []);

    await blocker.repair();
    assert.equal((await backend.check()).intact, true, 'table, sets and chain are back');
    assert.deepEqual(await kernelValues(ns, 'v4'), ['198.51.100.7', '203.0.113.0/24']);
    assert.deepEqual(await kernelValues(ns, 'v6'), ['2001:db8:1:2::/64']);
    const v4 = await kernelSet(ns, 'v4net');
    const net24 = v4.find((e) => e.val === '203.0.113.0/24');
    assert.ok(net24?.expires !== null && net24 !== undefined && net24.expires > 290 && net24.expires <= 300, 'restored with its remaining time');
    assert.equal(metrics.driftRepairs, 1);
    assert.deepEqual(blocker.lastErrors, []);
  } finally {
    await blocker.close();
  }
});

/** The layout before hash sets: everything in interval sets v4 and v6, two rules. */
const OLDER = `table inet rated {
  set v4 { type ipv4_addr; flags interval,timeout; }
  set v6 { type ipv6_addr; flags interval,timeout; }
  chain block { type filter hook input priority -10; policy accept; ip saddr @v4 counter drop; ip6 saddr @v6 counter drop; }
}
`;

test('the older layout is moved in one transaction, with every element and its time left, while the blocked peer keeps pinging', async (t) => {
  const ns = setup(t, ['ping']);
  if (!ns) return;
  const peer = await createNamespace('rated-mig');
  let pinging: Promise<{ through: number; sent: number }> | null = null;
  try {
    await veth(ns, peer, { a: '192.0.2.1/24', b: '192.0.2.2/24', a6: '2001:db8:ff::1/64', b6: '2001:db8:ff::2/64' });
    await ns.run('nft', ['-f', '-'], OLDER);
    // 20,000 addresses, a network and the peer itself, as the older version left them.
    const many = Array.from({ length: 20_000 }, (_, i) => `10.${40 + Math.floor(i / 65_536)}.${Math.floor(i / 256) % 256}.${i % 256}`);
    const script = [
      `add element inet rated v4 { ${many.map((a) => `${a} timeout 1h`).join(', ')} }`,
      'add element inet rated v4 { 192.0.2.2 timeout 30m, 203.0.113.0/24 timeout 2h }',
      'add element inet rated v6 { 2001:db8:ff::/64 timeout 45m, 2001:db8:77::1 timeout 20m }',
    ].join('\n');
    await ns.run('nft', ['-f', '-'], script);
    const ping = (target: string) => peer.exec('ping', ['-n', '-c1', '-W1', target]);
    assert.notEqual((await ping('192.0.2.1')).exitCode, 0, 'the peer is blocked before the move');

    // The peer floods pings, IPv4 and IPv6, the whole time; none may get through.
    pinging = (async () => {
      let through = 0;
      let sent = 0;
      const until = Date.now() + 6000;
      while (Date.now() < until) {
        const r = await peer.exec('ping', ['-n', '-q', '-i', '0.01', '-c', '50', '-W', '1', '192.0.2.1']);
        const r6 = await peer.exec('ping', ['-n', '-q', '-i', '0.01', '-c', '50', '-W', '1', '2001:db8:ff::1']);
        for (const out of [r.stdout, r6.stdout]) {
          const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
          if (m) {
            sent += Number(m[1]);
            through += Number(m[2]);
          }
        }
      }
      return { through, sent };
    })();

    const backend = new NftablesBackend(ns.runner, OPTS);
    await backend.ensure();
    assert.equal(backend.moved, 20_004);
    assert.equal((await backend.check()).intact, true, 'the new layout is complete');
    const v4 = await kernelSet(ns, 'v4');
    assert.equal(v4.length, 20_001);
    const peer4 = v4.find((e) => e.val === '192.0.2.2');
    assert.ok(peer4?.timeout !== null && peer4 !== undefined && peer4.timeout <= 1800 && peer4.timeout > 1780, `kept its time left: ${JSON.stringify(peer4)}`);
    assert.deepEqual((await kernelSet(ns, 'v4net')).map((e) => e.val), ['203.0.113.0/24']);
    assert.deepEqual((await kernelSet(ns, 'v6')).map((e) => e.val), ['2001:db8:ff::']);
    assert.deepEqual((await kernelSet(ns, 'v6net')).map((e) => e.val), ['2001:db8:77::1']);

    const { through, sent } = await pinging;
    pinging = null;
    assert.ok(sent > 100, `the peer kept sending (${sent})`);
    assert.equal(through, 0, `not one of ${sent} pings got through during the move`);
    await backend.ensure();
    assert.equal((await kernelSet(ns, 'v4')).length, 20_001, 'a second ensure moves nothing and keeps everything');
  } finally {
    await pinging?.catch(() => undefined);
    await peer.delete();
  }
});
