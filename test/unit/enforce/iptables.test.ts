import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Network } from '../../../src/address.js';
import type { Op } from '../../../src/enforce/backend.js';
import { IptablesBackend, jumpRule, parseRules, planChanges, renderScript } from '../../../src/enforce/iptables.js';
import type { CommandResult, Runner } from '../../../src/run-command.js';
import { anchorOf, splitCounters } from '../../../src/enforce/xtables.js';
import { net } from '../../helpers/net.js';


function add(text: string): Op {
  return { kind: 'add', net: net(text), timeoutMs: 60_000, replace: false };
}

function del(text: string): Op {
  return { kind: 'delete', net: net(text), timeoutMs: 0, replace: false };
}

test('anchorOf: input and forward hang from the filter table, prerouting from raw', () => {
  assert.deepEqual(anchorOf('input'), { table: 'filter', chain: 'INPUT' });
  assert.deepEqual(anchorOf('forward'), { table: 'filter', chain: 'FORWARD' });
  assert.deepEqual(anchorOf('prerouting'), { table: 'raw', chain: 'PREROUTING' });
  assert.deepEqual(jumpRule('rated'), ['-j', 'rated']);
});

test('planChanges: adds of present networks and deletes of absent ones change nothing; a delete removes every copy', () => {
  const present = new Map([['192.0.2.1', 1], ['198.51.100.0/24', 2]]);
  const { changes, noops } = planChanges('rated', [
    add('192.0.2.1'), add('192.0.2.2'), del('192.0.2.9'), del('198.51.100.0/24'), add('2001:db8:1::/64'),
  ], present);
  assert.deepEqual(changes.map((c) => c.line), [
    '-A rated -s 192.0.2.2 -j DROP',
    '-D rated -s 198.51.100.0/24 -j DROP',
    '-D rated -s 198.51.100.0/24 -j DROP',
    '-A rated -s 2001:db8:1::/64 -j DROP',
  ]);
  assert.deepEqual(noops.map((o) => `${o.kind} ${o.net.text}`), ['add 192.0.2.1', 'delete 192.0.2.9']);
});

test('renderScript: one table, our lines, COMMIT; no chain line, so --noflush flushes nothing', () => {
  assert.equal(renderScript('filter', ['-A rated -s 192.0.2.2 -j DROP', '-D rated -s 192.0.2.3 -j DROP']),
    '*filter\n-A rated -s 192.0.2.2 -j DROP\n-D rated -s 192.0.2.3 -j DROP\nCOMMIT\n');
});

// `iptables -S` and `ip6tables -v -S` as iptables 1.8.9 prints them, with foreign rules.
const FILTER_V4 = `-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N rated
-N hostfw
-A INPUT -j rated
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A hostfw -s 192.0.2.50/32 -j DROP
-A rated -s 192.0.2.2/32 -j DROP
-A rated -s 198.51.100.0/24 -j DROP
-A rated -s 198.51.100.0/24 -j DROP
-A rated -s 192.0.2.3/32 -p tcp -j DROP
-A rated -s 0.0.0.0/32 -j ACCEPT`;

test('parseRules: DROP rules of our chain only, canonical, duplicates counted', () => {
  const rules = parseRules(FILTER_V4.split('\n'), 'rated', 4);
  assert.deepEqual([...rules.values()].map((r) => [r.net.text, r.copies]), [['192.0.2.2', 1], ['198.51.100.0/24', 2]]);
});

test('parseRules: IPv6 with counters', () => {
  const lines = ['-P INPUT ACCEPT -c 0 0', '-N rated', '-A INPUT -c 4 336 -j rated',
    '-A rated -s 2001:db8:1::/64 -c 3 252 -j DROP', '-A rated -s 2001:db8::1/128 -c 0 0 -j DROP'];
  assert.deepEqual([...parseRules(lines, 'rated', 6).keys()], ['2001:db8:1::/64', '2001:db8::1']);
  assert.deepEqual(splitCounters('-A rated -s 2001:db8:1::/64 -c 3 252 -j DROP'), { rule: '-A rated -s 2001:db8:1::/64 -j DROP', packets: 3, bytes: 252 });
});

/** A fake iptables and iptables-restore over an in-memory chain per family (all-or-nothing like the real one). */
function fakeIptables(options: { refuse?: string } = {}) {
  const chains = { 4: [] as string[], 6: [] as string[] };
  const calls: Array<{ file: string; args: readonly string[]; input?: string }> = [];
  const runner: Runner = async (file, args, input): Promise<CommandResult> => {
    calls.push({ file, args, ...(input === undefined ? {} : { input }) });
    const family = file.startsWith('ip6') ? 6 : 4;
    if (file.endsWith('-restore')) {
      assert.deepEqual(args, ['--wait=5', '--noflush']);
      const lines = (input ?? '').split('\n').filter((l) => l !== '' && l !== '*filter' && l !== 'COMMIT');
      const next = [...chains[family]];
      for (const [i, line] of lines.entries()) {
        const rule = line.slice(3);
        if (options.refuse !== undefined && line.includes(` ${options.refuse} `)) {
          return { exitCode: 2, stdout: '', stderr: `iptables-restore: line ${i + 2} failed\n` };
        }
        if (line.startsWith('-A ')) next.push(rule);
        else {
          const at = next.indexOf(rule);
          if (at < 0) return { exitCode: 1, stdout: '', stderr: `iptables-restore: line ${i + 2} failed\n` };
          next.splice(at, 1);
        }
      }
      chains[family] = next;
      return { exitCode: 0, stdout: '', stderr: '' };
    }
    assert.deepEqual(args.slice(0, 3), ['--wait=5', '-t', 'filter']);
    const text = ['-P INPUT ACCEPT', '-N rated', '-A INPUT -j rated', ...chains[family].map((r) => {
      const [chain, , addr, ...rest] = r.split(' ');
      return `-A ${chain} -s ${addr?.includes('/') ? addr : `${addr}/${family === 4 ? 32 : 128}`} ${rest.join(' ')}`;
    })].join('\n');
    return { exitCode: 0, stdout: `${text}\n`, stderr: '' };
  };
  return { runner, chains, calls };
}

test('commit: one iptables-restore per family; a renewal of a present rule adds no duplicate', async () => {
  const fake = fakeIptables();
  const backend = new IptablesBackend(fake.runner, { table: 'rated', hook: 'input' });
  backend.add(net('192.0.2.2'), 60_000, false);
  backend.add(net('2001:db8:1::/64'), 60_000, false);
  assert.deepEqual(await backend.commit(), { applied: 2, failed: [] });
  assert.deepEqual(fake.chains, { 4: ['rated -s 192.0.2.2 -j DROP'], 6: ['rated -s 2001:db8:1::/64 -j DROP'] });
  assert.equal(fake.calls.filter((c) => c.file.endsWith('-restore')).length, 2);

  backend.add(net('192.0.2.2'), 120_000, true);
  backend.delete(net('192.0.2.77'));
  assert.deepEqual(await backend.commit(), { applied: 2, failed: [] });
  assert.deepEqual(fake.chains[4], ['rated -s 192.0.2.2 -j DROP'], 'still one rule');
  assert.deepEqual((await backend.list()).map((e) => [e.net.text, e.expiresAt]), [['192.0.2.2', null], ['2001:db8:1::/64', null]]);
});

test('commit: a refused rule is isolated; the others of its batch are applied', async () => {
  const fake = fakeIptables({ refuse: '192.0.2.3' });
  const backend = new IptablesBackend(fake.runner, { table: 'rated', hook: 'input' });
  for (const i of [1, 2, 3, 4]) backend.add(net(`192.0.2.${i}`), 60_000, false);
  const result = await backend.commit();
  assert.equal(result.applied, 3);
  assert.deepEqual(result.failed.map((f) => [f.net.text, f.error]), [['192.0.2.3', 'iptables-restore: line 2 failed']]);
  assert.deepEqual(fake.chains[4].sort(), ['rated -s 192.0.2.1 -j DROP', 'rated -s 192.0.2.2 -j DROP', 'rated -s 192.0.2.4 -j DROP']);
});

test('commit: a /0 or a network that is not validator output never reaches iptables', async () => {
  const fake = fakeIptables();
  const backend = new IptablesBackend(fake.runner, { table: 'rated', hook: 'input' });
  const everything: Network = { family: 4, value: 0n, prefix: 0, text: '0.0.0.0/0' };
  const hostile: Network = { family: 4, value: 0n, prefix: 32, text: '1.2.3.4 -j ACCEPT' };
  backend.add(everything, 60_000, false);
  backend.add(hostile, 60_000, false);
  const result = await backend.commit();
  assert.equal(result.applied, 0);
  assert.deepEqual(result.failed.map((f) => f.net), [everything, hostile]);
  assert.equal(fake.calls.length, 0, 'no tool ran');
});
