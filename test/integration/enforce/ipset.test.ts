// The ipset backend and the Blocker against a real `ipset` and `iptables`,
// inside a network namespace this file creates and deletes: sets and rules
// are per namespace, so the host's own firewall is never touched.
import { after, before, beforeEach, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { clientKey, parseAddress, type Network } from '../../../src/address.js';
import { IpsetBackend, type IpsetOptions } from '../../../src/enforce/ipset.js';
import { createNamespace, veth, type Namespace } from '../../helpers/netns.js';
import { prereqsMet, requireRoot, requireTools } from '../../helpers/prereq.js';
import { waitFor } from '../../helpers/wait-for.js';
import { net } from '../../helpers/net.js';
import { blockOfEachKind, counting, makeBlocker } from '../../helpers/blocker.js';

const TOOLS = ['ipset', 'iptables', 'ip6tables', 'ip'];
const OPTS: IpsetOptions = { table: 'rated', hook: 'input' };
const RULE4 = '-A INPUT -m set --match-set rated-v4 src -j DROP';
const RULE6 = '-A INPUT -m set --match-set rated-v6 src -j DROP';
const RULE4NET = '-A INPUT -m set --match-set rated-v4net src -j DROP';
const RULE6NET = '-A INPUT -m set --match-set rated-v6net src -j DROP';
const FOREIGN_RULE = '-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT';

let shared: Namespace | undefined;

before(async () => {
  if (prereqsMet(TOOLS)) shared = await createNamespace('rated-ipset');
});

after(async () => {
  await shared?.delete();
});

beforeEach(async () => {
  // Our own namespace: every test starts without rules or sets.
  if (!shared) return;
  for (const tool of ['iptables', 'ip6tables']) {
    await shared.run(tool, ['-w', '-F']);
    await shared.run(tool, ['-w', '-X']);
  }
  await shared.run('ipset', ['destroy']);
});

/** The namespace for a test, or null when the test was skipped for a missing prerequisite. */
function setup(t: TestContext, tools: readonly string[] = []): Namespace | null {
  if (!requireRoot(t) || !requireTools(t, [...TOOLS, ...tools])) return null;
  assert.ok(shared, 'the namespace was created');
  return shared;
}


interface Member {
  readonly val: string;
  readonly timeout: number | null;
}

/** The members of a set as `ipset list` prints them. */
async function members(ns: Namespace, set: string): Promise<Member[]> {
  const text = (await ns.run('ipset', ['list', set])).stdout;
  const body = text.split('\nMembers:\n')[1] ?? '';
  return body.split('\n').filter((l) => l.trim() !== '').map((l) => {
    const m = /^(\S+)(?: timeout (\d+))?/.exec(l.trim());
    return { val: m?.[1] ?? l, timeout: m?.[2] === undefined ? null : Number(m[2]) };
  });
}

async function values(ns: Namespace, set: string): Promise<string[]> {
  return (await members(ns, set)).map((m) => m.val).sort();
}

/** `iptables -S INPUT` (or ip6tables) as lines. */
async function input(ns: Namespace, tool: 'iptables' | 'ip6tables'): Promise<string[]> {
  return (await ns.run(tool, ['-w', '-S', 'INPUT'])).stdout.trim().split('\n');
}

/** A rule in INPUT and a set that are not ours, with a name like ours. */
async function createForeign(ns: Namespace): Promise<string> {
  await ns.run('iptables', ['-w', '-A', 'INPUT', '-p', 'tcp', '--dport', '22', '-j', 'ACCEPT']);
  await ns.run('ip6tables', ['-w', '-A', 'INPUT', '-p', 'tcp', '--dport', '22', '-j', 'ACCEPT']);
  await ns.run('ipset', ['create', 'rated-trusted', 'hash:ip']);
  await ns.run('ipset', ['add', 'rated-trusted', '192.0.2.10']);
  return foreign(ns);
}

async function foreign(ns: Namespace): Promise<string> {
  const set = (await ns.run('ipset', ['list', 'rated-trusted', '-output', 'save'])).stdout;
  const v4 = (await input(ns, 'iptables')).filter((l) => l === FOREIGN_RULE);
  const v6 = (await input(ns, 'ip6tables')).filter((l) => l === FOREIGN_RULE);
  return JSON.stringify({ set, v4, v6 });
}



test('ensure creates the four sets (hash:ip for IPv4 addresses, hash:net for the rest) with timeouts and counters, one rule each at the top of INPUT; twice changes nothing', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const before = await createForeign(ns);
  const backend = new IpsetBackend(ns.runner, OPTS);
  assert.equal((await backend.check()).intact, false);

  await backend.ensure();
  for (const [set, type, family] of [['rated-v4', 'hash:ip', 'inet'], ['rated-v6', 'hash:net', 'inet6'], ['rated-v4net', 'hash:net', 'inet'], ['rated-v6net', 'hash:net', 'inet6']] as const) {
    const header = (await ns.run('ipset', ['list', '-terse', set])).stdout;
    assert.match(header, new RegExp(`^Type: ${type}$`, 'm'), set);
    assert.match(header, new RegExp(`^Header: family ${family} hashsize 1024 maxelem 1048576 timeout 0 counters `, 'm'), set);
  }
  assert.deepEqual((await input(ns, 'iptables')).slice(0, 3), ['-P INPUT ACCEPT', RULE4, RULE4NET], 'the v4 rules are first in INPUT');
  assert.deepEqual((await input(ns, 'ip6tables')).slice(0, 3), ['-P INPUT ACCEPT', RULE6, RULE6NET], 'the v6 rules are first in INPUT');
  assert.deepEqual(await backend.check(), { intact: true, droppedPackets: 0, dropped: { ipv4: { packets: 0, bytes: 0 }, ipv6: { packets: 0, bytes: 0 } } });

  backend.add(net('198.51.100.7'), 600_000, false);
  assert.deepEqual(await backend.commit(), { applied: 1, failed: [] });
  const rules = [await input(ns, 'iptables'), await input(ns, 'ip6tables')];
  await backend.ensure();
  assert.deepEqual([await input(ns, 'iptables'), await input(ns, 'ip6tables')], rules, 'a second ensure adds no rule');
  assert.equal((await input(ns, 'iptables')).filter((l) => l === RULE4).length, 1);
  assert.deepEqual(await values(ns, 'rated-v4'), ['198.51.100.7'], 'ensure keeps our elements');

  assert.equal(await backend.flush(), 1);
  assert.deepEqual(await values(ns, 'rated-v4'), []);
  assert.equal((await backend.check()).intact, true, 'flush keeps the sets and rules');
  assert.equal(await foreign(ns), before, 'the foreign rule in INPUT and the foreign set are untouched');
});

test('a set of our name that cannot do the job is reported and left alone', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  await ns.run('ipset', ['create', 'rated-v4', 'hash:ip']);
  const backend = new IpsetBackend(ns.runner, OPTS);
  await assert.rejects(backend.ensure(), (err: Error) => {
    assert.match(err.message, /^ipset: set rated-v4 exists as hash:ip family inet without timeout; rated needs hash:ip family inet with timeout: remove that set or choose another firewall\.table$/);
    return true;
  });
  assert.match((await ns.run('ipset', ['list', '-terse', 'rated-v4'])).stdout, /^Type: hash:ip$/m, 'still the same set');
  assert.ok(!(await input(ns, 'iptables')).includes(RULE4), 'no rule refers to it');
});

test('1000 distinct addresses go to the kernel in one ipset process, each with a timeout', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const count = counting(ns.runner);
  const backend = new IpsetBackend(count.runner, OPTS);
  await backend.ensure();
  const texts = Array.from({ length: 1000 }, (_, i) => `10.20.${Math.floor(i / 250)}.${(i % 250) + 1}`);
  for (const text of texts) backend.add(net(text), 600_000, false);

  count.reset();
  const started = performance.now();
  const result = await backend.commit();
  console.log(`ipset: 1000-element batch committed in ${(performance.now() - started).toFixed(1)} ms`);
  assert.deepEqual(result, { applied: 1000, failed: [] });
  assert.equal(count.calls('ipset'), 1, 'one ipset restore for the whole batch');

  const listed = await members(ns, 'rated-v4');
  assert.equal(listed.length, 1000);
  assert.deepEqual(listed.map((m) => m.val).sort(), [...texts].sort());
  for (const m of listed) assert.ok(m.timeout !== null && m.timeout > 590 && m.timeout <= 600, `${m.val} has timeout ${String(m.timeout)}`);
  assert.equal((await backend.list()).length, 1000);
});

test('extending a block renews its kernel timeout', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const backend = new IpsetBackend(ns.runner, OPTS);
  await backend.ensure();
  backend.add(net('198.51.100.7'), 60_000, false);
  await backend.commit();
  const [first] = await members(ns, 'rated-v4');
  assert.ok(first?.timeout !== null && first !== undefined && first.timeout <= 60);

  backend.add(net('198.51.100.7'), 3_600_000, true);
  assert.deepEqual(await backend.commit(), { applied: 1, failed: [] });
  const renewed = await members(ns, 'rated-v4');
  assert.equal(renewed.length, 1);
  assert.ok(renewed[0]?.timeout !== null && renewed[0]!.timeout > 3590, `timeout ${String(renewed[0]?.timeout)} after the renewal`);
  const [entry] = await backend.list();
  assert.ok(entry?.expiresAt !== null && entry !== undefined && entry.expiresAt > Date.now() + 3_580_000);
});

test('deleting an element that already expired, and a poison element, do not cost the rest of the batch', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const backend = new IpsetBackend(ns.runner, OPTS);
  await backend.ensure();
  backend.add(net('192.0.2.50'), 1000, false);
  backend.add(net('192.0.2.51'), 60_000, false);
  await backend.commit();
  await waitFor(async () => !(await values(ns, 'rated-v4')).includes('192.0.2.50'), {
    timeoutMs: 10_000, intervalMs: 100, what: 'the kernel to expire 192.0.2.50',
  });

  // Bypasses the validator on purpose: ipset would look it up as a hostname.
  const poison: Network = { family: 4, value: 0n, prefix: 32, text: '999.1.1.1' };
  backend.delete(net('192.0.2.50'));
  backend.delete(net('192.0.2.51'));
  backend.add(net('192.0.2.52'), 60_000, false);
  backend.add(poison, 60_000, false);
  backend.add(net('192.0.2.53'), 120_000, false);
  const result = await backend.commit();
  assert.equal(result.applied, 4);
  assert.deepEqual(result.failed.map((f) => [f.net.text, f.op]), [['999.1.1.1', 'add']]);
  assert.match(result.failed[0]?.error ?? '', /999\.1\.1\.1/);
  const listed = await members(ns, 'rated-v4');
  assert.deepEqual(listed.map((m) => m.val).sort(), ['192.0.2.52', '192.0.2.53']);
});

test('a full set: new elements are refused with a message naming the set and its size; the rest goes on', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const backend = new IpsetBackend(ns.runner, { table: 'small', hook: 'input', maxElements: 4 });
  await backend.ensure();
  assert.match((await ns.run('ipset', ['list', '-terse', 'small-v4'])).stdout, / maxelem 4 /);
  for (const i of [1, 2, 3, 4, 5, 6]) backend.add(net(`192.0.2.${i}`), 60_000, false);
  backend.add(net('2001:db8::/64'), 60_000, false);
  const result = await backend.commit();
  assert.equal(result.applied, 5);
  assert.deepEqual(result.failed.map((f) => f.net.text), ['192.0.2.5', '192.0.2.6']);
  for (const f of result.failed) assert.match(f.error, /^ipset: set small-v4 is full \(maxelem 4\); .*Hash is full/);
  assert.deepEqual(await values(ns, 'small-v4'), ['192.0.2.1', '192.0.2.2', '192.0.2.3', '192.0.2.4']);
  assert.deepEqual(await values(ns, 'small-v6'), ['2001:db8::/64']);

  // A renewal of a present element still works in a full set.
  backend.add(net('192.0.2.1'), 600_000, true);
  assert.deepEqual(await backend.commit(), { applied: 1, failed: [] });
  const renewed = (await members(ns, 'small-v4')).find((m) => m.val === '192.0.2.1');
  assert.ok(renewed?.timeout !== null && renewed!.timeout > 590);
});

test('an IPv6 /64 client block lands in set v6 with its timeout', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const backend = new IpsetBackend(ns.runner, OPTS);
  await backend.ensure();
  const addr = parseAddress('2001:db8:1:2:a:b:c:d');
  assert.ok(addr);
  backend.add(clientKey(addr, 64), 300_000, false);
  assert.deepEqual(await backend.commit(), { applied: 1, failed: [] });
  const listed = await members(ns, 'rated-v6');
  assert.deepEqual(listed.map((m) => m.val), ['2001:db8:1:2::/64']);
  assert.ok(listed[0]?.timeout !== null && listed[0]!.timeout > 290 && listed[0]!.timeout <= 300);
  assert.deepEqual(await values(ns, 'rated-v4'), []);
  assert.deepEqual((await backend.list()).map((e) => e.net.text), ['2001:db8:1:2::/64']);
});

test('Blocker: unblock and flush touch our sets only', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const before = await createForeign(ns);
  const backend = new IpsetBackend(ns.runner, OPTS);
  await backend.ensure();
  const { blocker } = makeBlocker(backend);
  try {
    await blockOfEachKind(blocker);
    assert.deepEqual(await values(ns, 'rated-v4'), ['198.51.100.7']);
    assert.deepEqual(await values(ns, 'rated-v4net'), ['203.0.113.0/24']);

    assert.ok(blocker.unblock(net('198.51.100.7')));
    await blocker.settle();
    assert.deepEqual(await values(ns, 'rated-v4'), []);
    assert.deepEqual(await values(ns, 'rated-v4net'), ['203.0.113.0/24']);
    assert.equal(await foreign(ns), before, 'unblock left the foreign rule and set alone');

    assert.equal(await blocker.flush(), 2);
    for (const set of ['rated-v4', 'rated-v6', 'rated-v4net', 'rated-v6net']) assert.deepEqual(await values(ns, set), [], set);
    assert.equal((await backend.check()).intact, true, 'our sets and rules stay');
    assert.equal(await foreign(ns), before, 'flush left the foreign rule and set alone');
    assert.deepEqual(blocker.lastErrors, []);
  } finally {
    await blocker.close();
  }
});

test('Blocker: after `iptables -F INPUT` and `ipset destroy`, repair puts rules, sets and elements back', async (t) => {
  const ns = setup(t);
  if (!ns) return;
  const backend = new IpsetBackend(ns.runner, OPTS);
  await backend.ensure();
  const { blocker, metrics } = makeBlocker(backend);
  try {
    await blockOfEachKind(blocker, 300_000);

    // A firewall reload: INPUT flushed, then the unreferenced set destroyed.
    await ns.run('iptables', ['-w', '-F', 'INPUT']);
    await ns.run('ipset', ['destroy', 'rated-v4']);
    assert.equal((await backend.check()).intact, false);

    await blocker.repair();
    assert.equal((await backend.check()).intact, true, 'sets and rules are back');
    assert.ok((await input(ns, 'iptables')).includes(RULE4));
    assert.equal((await input(ns, 'ip6tables')).filter((l) => l === RULE6).length, 1, 'the v6 rule that stayed is not doubled');
    assert.deepEqual(await values(ns, 'rated-v4'), ['198.51.100.7']);
    assert.deepEqual(await values(ns, 'rated-v4net'), ['203.0.113.0/24']);
    assert.deepEqual(await values(ns, 'rated-v6'), ['2001:db8:1:2::/64']);
    const restored = (await members(ns, 'rated-v4net')).find((m) => m.val === '203.0.113.0/24');
    assert.ok(restored?.timeout !== null && restored!.timeout > 290 && restored!.timeout <= 300, 'restored with its remaining time');
    assert.equal(metrics.driftRepairs, 1);
    assert.deepEqual(blocker.lastErrors, []);
  } finally {
    await blocker.close();
  }
});


test('the older layout (hash:net v4 and v6 holding every block) moves into the four sets with no packet passing', async (t) => {
  const ns = setup(t, ['ping']);
  if (!ns) return;
  const peer = await createNamespace('rated-ipset-peer');
  try {
    await veth(ns, peer, { a: '10.66.0.1/24', b: '10.66.0.2/24' });
    // What a rated before this layout left: two hash:net sets with timeouts and a rule each.
    await ns.run('ipset', ['create', 'rated-v4', 'hash:net', 'family', 'inet', 'timeout', '0']);
    await ns.run('ipset', ['create', 'rated-v6', 'hash:net', 'family', 'inet6', 'timeout', '0']);
    await ns.run('ipset', ['-exist', 'restore'], [
      'add rated-v4 10.66.0.2 timeout 600', 'add rated-v4 203.0.113.0/24 timeout 300',
      'add rated-v6 2001:db8:1::/64 timeout 600', 'add rated-v6 2001:db8::/48 timeout 300', ''].join('\n'));
    await ns.run('iptables', ['-w', '-I', 'INPUT', '-m', 'set', '--match-set', 'rated-v4', 'src', '-j', 'DROP']);
    await ns.run('ip6tables', ['-w', '-I', 'INPUT', '-m', 'set', '--match-set', 'rated-v6', 'src', '-j', 'DROP']);
    assert.notEqual((await peer.exec('ping', ['-n', '-c1', '-W1', '10.66.0.1'])).exitCode, 0, 'blocked before the upgrade');

    // The blocked peer sends all through the upgrade: not one reply may come back.
    const flood = peer.exec('ping', ['-n', '-i', '0.01', '-c', '300', '-W', '1', '10.66.0.1']);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const backend = new IpsetBackend(ns.runner, OPTS);
    await backend.ensure();
    const pinged = await flood;
    assert.match(pinged.stdout, / 0 received/, pinged.stdout);

    assert.match((await ns.run('ipset', ['list', '-terse', 'rated-v4'])).stdout, /^Type: hash:ip$/m);
    assert.deepEqual(await values(ns, 'rated-v4'), ['10.66.0.2']);
    assert.deepEqual(await values(ns, 'rated-v4net'), ['203.0.113.0/24']);
    assert.deepEqual(await values(ns, 'rated-v6'), ['2001:db8:1::/64']);
    assert.deepEqual(await values(ns, 'rated-v6net'), ['2001:db8::/48']);
    const moved = (await members(ns, 'rated-v4')).find((m) => m.val === '10.66.0.2');
    assert.ok(moved?.timeout !== null && moved!.timeout > 590 && moved!.timeout <= 600, `kept its time left: ${JSON.stringify(moved)}`);
    assert.equal((await backend.check()).intact, true);
    assert.equal((await input(ns, 'iptables')).filter((l) => l === RULE4).length, 1);
  } finally {
    await peer.delete();
  }
});
