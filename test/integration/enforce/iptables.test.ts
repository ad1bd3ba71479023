// The iptables backend and the Blocker against a real `iptables` and
// `ip6tables` (whichever variant is on PATH), inside a network namespace this
// file creates and deletes: the host's own rules are never touched.
import { after, before, beforeEach, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import type { Network } from '../../../src/address.js';
import { IptablesBackend, type IptablesOptions } from '../../../src/enforce/iptables.js';
import { createNamespace, type Namespace } from '../../helpers/netns.js';
import { prereqsMet, requireRoot, requireTools } from '../../helpers/prereq.js';
import { waitFor } from '../../helpers/wait-for.js';
import { net } from '../../helpers/net.js';
import { blockOfEachKind, counting, makeBlocker } from '../../helpers/blocker.js';

const TOOLS = ['iptables', 'ip6tables', 'iptables-restore', 'ip6tables-restore', 'ip'];
const OPTS: IptablesOptions = { table: 'rated', hook: 'input' };
const JUMP = '-A INPUT -j rated';
const FOREIGN_RULE = '-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT';

let shared: Namespace | undefined;

before(async () => {
  if (prereqsMet(TOOLS)) {
    shared = await createNamespace('rated-ipt');
    console.log(`iptables variant: ${(await shared.run('iptables', ['--version'])).stdout.trim()}`);
  }
});

after(async () => {
  await shared?.delete();
});

beforeEach(async () => {
  // Our own namespace: every test starts without rules.
  if (!shared) return;
  for (const tool of ['iptables', 'ip6tables']) {
    await shared.run(tool, ['-w', '-F']);
    await shared.run(tool, ['-w', '-X']);
  }
});

/** The namespace for a test, or null when the test was skipped for a missing prerequisite. */
function setup(t: TestContext, tools: readonly string[] = []): Namespace | null {
  if (!requireRoot(t) || !requireTools(t, [...TOOLS, ...tools])) return null;
  assert.ok(shared, 'the namespace was created');
  return shared;
}


type Tool = 'iptables' | 'ip6tables';

/** `iptables -S [CHAIN]` as lines. */
async function rules(ns: Namespace, tool: Tool, chain?: string): Promise<string[]> {
  return (await ns.run(tool, ['-w', '-S', ...(chain ? [chain] : [])])).stdout.trim().split('\n');
}

/** The sources our chain drops, as `iptables -S rated` prints them. */
async function dropped(ns: Namespace, tool: Tool): Promise<string[]> {
  return (await rules(ns, tool, 'rated')).flatMap((l) => {
    const m = /^-A rated -s (\S+) -j DROP$/.exec(l);
    return m ? [m[1] as string] : [];
  }).sort();
}

/** A chain and a rule in INPUT that are not ours. */
async function createForeign(ns: Namespace): Promise<string> {
  for (const tool of ['iptables', 'ip6tables'] as const) {
    await ns.run(tool, ['-w', '-A', 'INPUT', '-p', 'tcp', '--dport', '22', '-j', 'ACCEPT']);
    await ns.run(tool, ['-w', '-N', 'hostfw']);
    await ns.run(tool, ['-w', '-A', 'hostfw', '-s', tool === 'iptables' ? '192.0.2.10' : '2001:db8::10', '-j', 'DROP']);
  }
  return foreign(ns);
}

async function foreign(ns: Namespace): Promise<string> {
  const out: string[] = [];
  for (const tool of ['iptables', 'ip6tables'] as const) {
    out.push(...(await rules(ns, tool)).filter((l) => l === FOREIGN_RULE || / hostfw( |$)/.test(l)));
  }
  return out.join('\n');
}



test('ensure creates our chain in iptables and ip6tables and one jump at the top of INPUT; twice changes nothing', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const before = await createForeign(ns);
  const backend = new IptablesBackend(ns.runner, OPTS);
  assert.equal((await backend.check()).intact, false);

  await backend.ensure();
  for (const tool of ['iptables', 'ip6tables'] as const) {
    const all = await rules(ns, tool);
    assert.ok(all.includes('-N rated'), `${tool}: chain rated exists`);
    assert.deepEqual((await rules(ns, tool, 'INPUT')).slice(0, 2), ['-P INPUT ACCEPT', JUMP], `${tool}: the jump is first in INPUT`);
  }
  assert.deepEqual(await backend.check(), { intact: true, droppedPackets: 0, dropped: { ipv4: { packets: 0, bytes: 0 }, ipv6: { packets: 0, bytes: 0 } } });

  backend.add(net('198.51.100.7'), 600_000, false);
  backend.add(net('2001:db8:1::/64'), 600_000, false);
  assert.deepEqual(await backend.commit(), { applied: 2, failed: [] });
  const once = [await rules(ns, 'iptables'), await rules(ns, 'ip6tables')];
  await backend.ensure();
  assert.deepEqual([await rules(ns, 'iptables'), await rules(ns, 'ip6tables')], once, 'a second ensure changes nothing');
  assert.deepEqual(await dropped(ns, 'iptables'), ['198.51.100.7/32']);
  assert.deepEqual(await dropped(ns, 'ip6tables'), ['2001:db8:1::/64']);

  assert.equal(await backend.flush(), 2);
  assert.deepEqual(await dropped(ns, 'iptables'), []);
  assert.deepEqual(await dropped(ns, 'ip6tables'), []);
  assert.equal((await backend.check()).intact, true, 'flush keeps the chain and the jump');
  assert.equal(await foreign(ns), before, 'the foreign chain and the foreign rule in INPUT are untouched');
});

test('1000 blocks: one iptables-restore per family, one rule each; adding them again adds no duplicate', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const count = counting(ns.runner);
  const backend = new IptablesBackend(count.runner, OPTS);
  await backend.ensure();
  const texts = Array.from({ length: 1000 }, (_, i) => `10.20.${Math.floor(i / 250)}.${(i % 250) + 1}`);
  for (const text of texts) backend.add(net(text), 600_000, false);
  backend.add(net('2001:db8:1::/64'), 600_000, false);

  count.reset();
  const started = performance.now();
  assert.deepEqual(await backend.commit(), { applied: 1001, failed: [] });
  console.log(`iptables: 1000-rule batch committed in ${(performance.now() - started).toFixed(1)} ms`);
  assert.equal(count.calls('iptables-restore'), 1);
  assert.equal(count.calls('ip6tables-restore'), 1);
  assert.deepEqual(await dropped(ns, 'iptables'), texts.map((x) => `${x}/32`).sort());

  for (const text of texts.slice(0, 10)) backend.add(net(text), 900_000, true);
  assert.deepEqual(await backend.commit(), { applied: 10, failed: [] });
  assert.equal((await dropped(ns, 'iptables')).length, 1000, 'renewals add no rule');
  assert.deepEqual((await backend.list()).filter((e) => e.expiresAt !== null), [], 'the kernel knows no expiry');
});

test('a delete of an absent rule and a poison rule do not cost the rest of the batch', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const backend = new IptablesBackend(ns.runner, OPTS);
  await backend.ensure();
  // A network that passes the text check but that iptables refuses: bypasses the validator on purpose.
  const poison: Network = { family: 4, value: 0n, prefix: 32, text: '999.1.1.1' };
  backend.delete(net('192.0.2.50'));
  backend.add(net('192.0.2.51'), 60_000, false);
  backend.add(poison, 60_000, false);
  backend.add(net('192.0.2.52'), 60_000, false);
  const result = await backend.commit();
  assert.equal(result.applied, 3);
  assert.deepEqual(result.failed.map((f) => [f.net.text, f.op]), [['999.1.1.1', 'add']]);
  assert.deepEqual(await dropped(ns, 'iptables'), ['192.0.2.51/32', '192.0.2.52/32']);
});

test('Blocker: rated lifts the rule when the block expires', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const backend = new IptablesBackend(ns.runner, OPTS);
  await backend.ensure();
  const { blocker } = makeBlocker(backend);
  blocker.start();
  try {
    blocker.block({ net: net('198.51.100.7'), durationMs: 2000, source: 'rule' });
    blocker.block({ net: net('2001:db8:1::/64'), durationMs: 2000, source: 'rule' });
    blocker.block({ net: net('198.51.100.8'), durationMs: 600_000, source: 'rule' });
    await blocker.settle();
    assert.deepEqual(await dropped(ns, 'iptables'), ['198.51.100.7/32', '198.51.100.8/32']);
    assert.deepEqual(await dropped(ns, 'ip6tables'), ['2001:db8:1::/64']);

    await waitFor(async () => (await dropped(ns, 'iptables')).length === 1 && (await dropped(ns, 'ip6tables')).length === 0, {
      timeoutMs: 8000, intervalMs: 100, what: 'the expired rules to be deleted',
    });
    assert.deepEqual(await dropped(ns, 'iptables'), ['198.51.100.8/32'], 'the longer block stays');
    assert.equal(blocker.has(net('198.51.100.7')), false);
    assert.deepEqual(blocker.lastErrors, []);
  } finally {
    await blocker.close();
  }
});

test('Blocker: unblock and flush touch our chain only', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const before = await createForeign(ns);
  const backend = new IptablesBackend(ns.runner, OPTS);
  await backend.ensure();
  const { blocker } = makeBlocker(backend);
  try {
    await blockOfEachKind(blocker);

    assert.ok(blocker.unblock(net('198.51.100.7')));
    await blocker.settle();
    assert.deepEqual(await dropped(ns, 'iptables'), ['203.0.113.0/24']);
    assert.equal(await foreign(ns), before, 'unblock left the foreign chain and rule alone');

    assert.equal(await blocker.flush(), 2);
    assert.deepEqual(await dropped(ns, 'iptables'), []);
    assert.deepEqual(await dropped(ns, 'ip6tables'), []);
    assert.equal((await backend.check()).intact, true);
    assert.equal(await foreign(ns), before, 'flush left the foreign chain and rule alone');
  } finally {
    await blocker.close();
  }
});

test('Blocker: after `iptables -F INPUT` and the chain deleted, repair puts jump, chain and rules back', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const backend = new IptablesBackend(ns.runner, OPTS);
  await backend.ensure();
  const { blocker, metrics } = makeBlocker(backend);
  try {
    blocker.block({ net: net('198.51.100.7'), durationMs: 600_000, source: 'rule' });
    blocker.block({ net: net('2001:db8:1:2::/64'), durationMs: 600_000, source: 'rule' });
    await blocker.settle();

    await ns.run('iptables', ['-w', '-F', 'INPUT']);
    await ns.run('iptables', ['-w', '-F', 'rated']);
    await ns.run('iptables', ['-w', '-X', 'rated']);
    await ns.run('ip6tables', ['-w', '-F', 'INPUT']);
    assert.equal((await backend.check()).intact, false);

    await blocker.repair();
    assert.equal((await backend.check()).intact, true);
    for (const tool of ['iptables', 'ip6tables'] as const) {
      assert.equal((await rules(ns, tool, 'INPUT')).filter((l) => l === JUMP).length, 1, `${tool}: one jump`);
    }
    assert.deepEqual(await dropped(ns, 'iptables'), ['198.51.100.7/32']);
    assert.deepEqual(await dropped(ns, 'ip6tables'), ['2001:db8:1:2::/64'], 'the v6 rule that stayed is not doubled');
    assert.equal(metrics.driftRepairs, 1);
    assert.deepEqual(blocker.lastErrors, []);
  } finally {
    await blocker.close();
  }
});

test('Blocker: a new instance adopts the rules it finds as reconciled, ending after the configured block time', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const backend = new IptablesBackend(ns.runner, OPTS);
  await backend.ensure();
  backend.add(net('198.51.100.7'), 600_000, false);
  backend.add(net('2001:db8:1:2::/64'), 600_000, false);
  await backend.commit();

  const { blocker } = makeBlocker(new IptablesBackend(ns.runner, OPTS), { reconciledBlockMs: 3_600_000 });
  try {
    assert.deepEqual(await blocker.resync(true), { added: 0, adopted: 2, removed: 0 });
    for (const text of ['198.51.100.7', '2001:db8:1:2::/64']) {
      const b = blocker.get(net(text));
      assert.equal(b?.source, 'reconciled');
      assert.ok(b?.expires !== null && b !== undefined && Math.abs(b.expires - (Date.now() + 3_600_000)) < 3000, `${text} ends in an hour`);
    }
  } finally {
    await blocker.close();
  }
});

