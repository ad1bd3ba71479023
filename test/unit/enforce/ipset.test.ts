import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Network } from '../../../src/address.js';
import type { Op } from '../../../src/enforce/backend.js';
import {
  createArgs, IpsetBackend, ipsetTimeout, matchRule, orderOps, parseHeader, parseSave, renderOps, type IpsetOptions,
} from '../../../src/enforce/ipset.js';
import type { CommandResult, Runner } from '../../../src/run-command.js';
import { net } from '../../helpers/net.js';

const OPTS: IpsetOptions = { table: 'rated', hook: 'input' };


function add(text: string, timeoutMs: number, replace = false): Op {
  return { kind: 'add', net: net(text), timeoutMs, replace };
}

function del(text: string): Op {
  return { kind: 'delete', net: net(text), timeoutMs: 0, replace: false };
}

test('createArgs: hash:ip for IPv4 addresses, hash:net for the rest, with timeouts, counters and explicit sizes, -exist', () => {
  assert.deepEqual(createArgs(OPTS, 'v4'),
    ['create', 'rated-v4', 'hash:ip', 'family', 'inet', 'hashsize', '1024', 'maxelem', '1048576', 'timeout', '0', 'counters', '-exist']);
  assert.deepEqual(createArgs({ ...OPTS, table: 'web', maxElements: 8 }, 'v6'),
    ['create', 'web-v6', 'hash:net', 'family', 'inet6', 'hashsize', '1024', 'maxelem', '8', 'timeout', '0', 'counters', '-exist']);
  assert.deepEqual(createArgs(OPTS, 'v4net').slice(1, 5), ['rated-v4net', 'hash:net', 'family', 'inet']);
  assert.deepEqual(createArgs(OPTS, 'v6net').slice(1, 5), ['rated-v6net', 'hash:net', 'family', 'inet6']);
});

test('matchRule: one DROP rule per set matching the source against it', () => {
  assert.deepEqual(matchRule('rated', 'v4'), ['-m', 'set', '--match-set', 'rated-v4', 'src', '-j', 'DROP']);
  assert.deepEqual(matchRule('rated', 'v6net'), ['-m', 'set', '--match-set', 'rated-v6net', 'src', '-j', 'DROP']);
});

test('renderOps: one line per change, the address picks the set, deletes carry no timeout', () => {
  const script = renderOps('rated', [
    del('192.0.2.9'),
    add('198.51.100.7', 600_000),
    add('203.0.113.0/24', 60_000, true),
    add('2001:db8:1:2::/64', 300_000),
    del('2001:db8::1'),
  ]);
  assert.equal(script, [
    'del rated-v4 192.0.2.9',
    'add rated-v4 198.51.100.7 timeout 600',
    'add rated-v4net 203.0.113.0/24 timeout 60',
    'add rated-v6 2001:db8:1:2::/64 timeout 300',
    'del rated-v6net 2001:db8::1',
    '',
  ].join('\n'));
});

test('ipsetTimeout: whole seconds rounded up, never 0 (which means forever), never above 2147483', () => {
  assert.deepEqual([0, 1, 1000, 1001, 59_999].map(ipsetTimeout), [1, 1, 1, 2, 60]);
  assert.equal(ipsetTimeout(2_147_483_000), 2_147_483);
  assert.equal(ipsetTimeout(90 * 86_400_000), 2_147_483, 'a 90-day block is clamped to ipset\'s maximum');
});

test('orderOps: deletes first (they make room), then adds, each in queue order', () => {
  const ops = [add('192.0.2.1', 1), del('192.0.2.2'), add('192.0.2.3', 1), del('192.0.2.4')];
  assert.deepEqual(orderOps(ops).map((o) => `${o.kind} ${o.net.text}`), ['delete 192.0.2.2', 'delete 192.0.2.4', 'add 192.0.2.1', 'add 192.0.2.3']);
});

// What `ipset list rated-v4 -output save` prints (ipset 7.17), plus lines we do not manage.
const SAVE_V4 = `create rated-v4 hash:net family inet hashsize 1024 maxelem 1048576 timeout 0 bucketsize 12 initval 0x9e02b0b1
add rated-v4 10.0.0.0/8 timeout 99
add rated-v4 192.0.2.1 timeout 59
add rated-v4 192.0.2.77 timeout 0
add other-v4 192.0.2.8 timeout 50
add rated-v4 not-an-address timeout 5
`;

test('parseSave: elements with remaining time; timeout 0 is no expiry; other sets and junk skipped', () => {
  const now = 1_700_000_000_000;
  const entries = parseSave(SAVE_V4, 'rated-v4', 4, now).map((e) => [e.net.text, e.expiresAt]);
  assert.deepEqual(entries, [
    ['10.0.0.0/8', now + 99_000],
    ['192.0.2.1', now + 59_000],
    ['192.0.2.77', null],
  ]);
});

test('parseSave: IPv6 prefixes; a mapped IPv4 network in the v6 set is not ours', () => {
  const save = `create rated-v6 hash:net family inet6 hashsize 1024 maxelem 1048576 timeout 0 bucketsize 12 initval 0x71b1ab2e
add rated-v6 2001:db8:1::/64 timeout 99
add rated-v6 ::ffff:0.0.0.0/96 timeout 99
`;
  assert.deepEqual(parseSave(save, 'rated-v6', 6, 0).map((e) => [e.net.text, e.net.family, e.expiresAt]), [['2001:db8:1::/64', 6, 99_000]]);
});

test('parseHeader: type, family, maxelem, timeout support and the number of entries', () => {
  const ours = 'Name: rated-v4\nType: hash:net\nRevision: 7\nHeader: family inet hashsize 1024 maxelem 4 timeout 0 bucketsize 12 initval 0x9e02b0b1\nSize in memory: 520\nReferences: 1\nNumber of entries: 3\n';
  assert.deepEqual(parseHeader(ours), { type: 'hash:net', family: 'inet', maxelem: 4, timeout: true, counters: false, entries: 3 });
  const foreign = 'Name: rated-v4\nType: hash:ip\nRevision: 6\nHeader: family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1\n';
  assert.deepEqual(parseHeader(foreign), { type: 'hash:ip', family: 'inet', maxelem: 65536, timeout: false, counters: false, entries: null });
  const counted = 'Name: rated-v4\nType: hash:ip\nRevision: 6\nHeader: family inet hashsize 1024 maxelem 8 timeout 0 counters bucketsize 12 initval 0x1\n';
  assert.equal(parseHeader(counted)?.counters, true);
  assert.equal(parseHeader('garbage'), null);
});

/**
 * A fake `ipset -exist restore` over an in-memory set: applies lines in
 * order and stops at the first one it refuses, naming it like ipset does.
 */
function fakeIpset(options: { maxelem: number; poison?: string }) {
  const sets = new Map<string, Map<string, number>>(['rated-v4', 'rated-v6', 'rated-v4net', 'rated-v6net'].map((n) => [n, new Map<string, number>()]));
  const scripts: string[] = [];
  const runner: Runner = async (file, args, input): Promise<CommandResult> => {
    assert.equal(file, 'ipset');
    assert.deepEqual(args, ['-exist', 'restore']);
    scripts.push(input ?? '');
    const lines = (input ?? '').split('\n').filter((l) => l !== '');
    for (const [i, line] of lines.entries()) {
      const [verb, set, addr, , timeout] = line.split(' ') as [string, string, string, string?, string?];
      const elements = sets.get(set);
      assert.ok(elements, `script names one of our sets: ${line}`);
      const fail = (why: string): CommandResult => ({ exitCode: 1, stdout: '', stderr: `ipset v7.17: Error in line ${i + 1}: ${why}\n` });
      if (addr === options.poison) return fail(`Syntax error: cannot parse ${addr}: resolving to IPv4 address failed`);
      if (verb === 'del') {
        elements.delete(addr);
      } else {
        if (!elements.has(addr) && elements.size >= options.maxelem) return fail('Hash is full, cannot add more elements');
        elements.set(addr, Number(timeout));
      }
    }
    return { exitCode: 0, stdout: '', stderr: '' };
  };
  return { runner, sets, scripts };
}

test('commit: a batch is one ipset restore', async () => {
  const fake = fakeIpset({ maxelem: 100 });
  const backend = new IpsetBackend(fake.runner, OPTS);
  backend.add(net('192.0.2.1'), 60_000, false);
  backend.add(net('2001:db8:1::/64'), 120_000, false);
  assert.deepEqual(await backend.commit(), { applied: 2, failed: [] });
  assert.equal(fake.scripts.length, 1);
  assert.deepEqual([...fake.sets.get('rated-v4')!], [['192.0.2.1', 60]]);
  assert.deepEqual([...fake.sets.get('rated-v6')!], [['2001:db8:1::/64', 120]]);
});

test('commit: a refused line is reported; the rest of the batch runs again and is applied', async () => {
  const fake = fakeIpset({ maxelem: 100, poison: '192.0.2.3' });
  const backend = new IpsetBackend(fake.runner, OPTS);
  for (const i of [1, 2, 3, 4, 5]) backend.add(net(`192.0.2.${i}`), 60_000, false);
  const result = await backend.commit();
  assert.equal(result.applied, 4);
  assert.deepEqual(result.failed.map((f) => [f.net.text, f.op]), [['192.0.2.3', 'add']]);
  assert.match(result.failed[0]?.error ?? '', /^Error in line 3: Syntax error/);
  assert.deepEqual([...fake.sets.get('rated-v4')!.keys()].sort(), ['192.0.2.1', '192.0.2.2', '192.0.2.4', '192.0.2.5']);
  assert.equal(fake.scripts.length, 2, 'one more run per refused line, not a bisection');
});

test('commit: a full set refuses every new element at once, naming the set and its size; renewals and the other set go on', async () => {
  const fake = fakeIpset({ maxelem: 2 });
  fake.sets.get('rated-v4')!.set('192.0.2.1', 10);
  const backend = new IpsetBackend(fake.runner, { ...OPTS, maxElements: 2 });
  backend.add(net('192.0.2.2'), 60_000, false);
  backend.add(net('192.0.2.3'), 60_000, false);
  backend.add(net('192.0.2.1'), 90_000, true);
  backend.add(net('192.0.2.4'), 60_000, false);
  backend.add(net('2001:db8::/64'), 60_000, false);
  const result = await backend.commit();
  assert.deepEqual(result.failed.map((f) => f.net.text), ['192.0.2.3', '192.0.2.4']);
  for (const f of result.failed) assert.match(f.error, /^ipset: set rated-v4 is full \(maxelem 2\); .*Hash is full/);
  assert.equal(result.applied, 3);
  assert.deepEqual(Object.fromEntries(fake.sets.get('rated-v4')!), { '192.0.2.1': 90, '192.0.2.2': 60 });
  assert.deepEqual([...fake.sets.get('rated-v6')!.keys()], ['2001:db8::/64']);
  assert.equal(fake.scripts.length, 2, 'a full set costs one more run, not one per element');
});

test('commit: a network that is not validator output never reaches the script', async () => {
  const fake = fakeIpset({ maxelem: 100 });
  const backend = new IpsetBackend(fake.runner, OPTS);
  const hostile: Network = { family: 4, value: 0n, prefix: 32, text: '192.0.2.1 timeout 0\nflush rated-v4' };
  const everything: Network = { family: 4, value: 0n, prefix: 0, text: '0.0.0.0/0' };
  backend.add(hostile, 60_000, false);
  backend.add(everything, 60_000, false);
  backend.add(net('192.0.2.2'), 60_000, false);
  const result = await backend.commit();
  assert.deepEqual(result.failed.map((f) => f.net), [hostile, everything]);
  assert.equal(result.applied, 1);
  assert.deepEqual(fake.scripts, ['add rated-v4 192.0.2.2 timeout 60\n']);
});

test('parseSave: the packets and bytes each element counted', () => {
  const save = 'create rated-v4 hash:ip family inet hashsize 1024 maxelem 8 timeout 0 counters\nadd rated-v4 192.0.2.1 timeout 59 packets 12 bytes 720\nadd rated-v4 192.0.2.2 timeout 9\n';
  assert.deepEqual(parseSave(save, 'rated-v4', 4, 0).map((e) => [e.net.text, e.dropped]), [['192.0.2.1', { packets: 12, bytes: 720 }], ['192.0.2.2', null]]);
});
