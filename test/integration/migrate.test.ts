// Moving in from the rated of 2014 (rated migrate iptables): a namespace whose
// iptables and ip6tables (nft and legacy) hold that tool's rules — one
// `-A INPUT -s ADDR -j DROP` and one `-A OUTPUT -d ADDR -j REJECT` per
// address, a few thousand — mixed with rules that must stay. While rated
// migrates them an offender keeps sending: not one packet may pass. Then the
// rules are gone, the foreign ones untouched, the addresses blocked by rated
// (source migrated), and a second run changes nothing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cleanUp } from '../helpers/cleanup.js';
import { kernelElements } from '../helpers/kernel-set.js';
import type { Namespace } from '../helpers/netns.js';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { startRated, type CliResult, type Rated } from '../helpers/rated.js';
import { serverLab, type ServerLab } from '../helpers/server-lab.js';

const TOOLS = ['ip', 'nft', 'ping', 'iptables-nft-restore', 'ip6tables-nft-restore', 'iptables-legacy-restore'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;
const SRV = '10.90.1.1';
const BAD = '10.90.1.2';
const OLD = 1500;

/** The 2014 tool's rules for `n` addresses in 11.0.0.0/8 and the offender, as iptables-save prints them. */
function oldRules(): string {
  const lines = ['*filter'];
  const add = (ip: string): void => {
    lines.push(`-A INPUT -s ${ip}/32 -j DROP`, `-A OUTPUT -d ${ip}/32 -j REJECT --reject-with icmp-port-unreachable`);
  };
  for (let i = 0; i < OLD; i++) add(`11.${i >> 16}.${(i >> 8) & 255}.${i & 255}`);
  add(BAD);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** Rules that are not the 2014 tool's, and one for an allow-listed address: all must stay. */
const FOREIGN_V4 = [
  '-A INPUT -i lo -j ACCEPT',
  '-A INPUT -s 192.0.2.5/32 -p tcp -m tcp --dport 22 -j DROP',
  '-A INPUT -s 192.0.2.6/32 -j ACCEPT',
  '-A INPUT -s 198.51.100.7/32 -j DROP',
  '-A FORWARD -s 192.0.2.8/32 -j DROP',
];

describe('rated migrate iptables', { skip: SKIP }, () => {
  let lab: ServerLab | undefined;
  let srv: Namespace | undefined;
  let bad: Namespace | undefined;
  let config = '';
  let socket = '';
  let rated: Rated | undefined;

  before(async () => {
    lab = await serverLab({ name: 'mig', server: SRV, client: BAD, block: '6h', allow: ['198.51.100.0/24'] });
    ({ srv, client: bad, config, socket } = lab);
    const restore = async (tool: string, text: string): Promise<void> => {
      const r = await srv!.exec(tool, ['--noflush'], text);
      assert.equal(r.exitCode, 0, `${tool}: ${r.stderr}`);
    };
    await restore('iptables-nft-restore', `*filter\n${FOREIGN_V4.join('\n')}\nCOMMIT\n`);
    await restore('iptables-nft-restore', oldRules());
    await restore('ip6tables-nft-restore', '*filter\n-A INPUT -s 2001:db8::9/128 -j DROP\n-A OUTPUT -d 2001:db8::9/128 -j REJECT --reject-with icmp6-port-unreachable\n-A INPUT -p ipv6-icmp -j ACCEPT\nCOMMIT\n');
    await restore('iptables-legacy-restore', '*filter\n-A INPUT -s 192.0.2.30/32 -j DROP\nCOMMIT\n');
  });

  after(() => cleanUp([() => rated?.stop(), () => lab?.cleanup()]));

  const cli = (args: readonly string[]): Promise<CliResult> => lab!.cli(args);
  async function saved(tool: string): Promise<string[]> {
    const r = await srv!.exec(tool, ['-t', 'filter']);
    assert.equal(r.exitCode, 0, r.stderr);
    return r.stdout.split('\n').filter((l) => l.startsWith('-A '));
  }

  test('--dry-run prints the plan and changes nothing; without --yes and no terminal it refuses', async () => {
    rated = await startRated({ namespace: srv!, config, socket });
    const before = await saved('iptables-nft-save');
    const dry = await cli(['migrate', 'iptables', '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, new RegExp(`^would migrate ${OLD + 4} addresses from ${2 * OLD + 6} rules$`, 'm'), dry.stdout);
    assert.match(dry.stdout, /^refused 1: allow-listed 1$/m, dry.stdout);
    assert.match(dry.stdout, /^left alone: 4 other rules in INPUT\/OUTPUT/m, dry.stdout);
    const noYes = await cli(['migrate', 'iptables']);
    assert.equal(noYes.code, 2);
    assert.match(noYes.stderr, /--yes/);
    assert.deepEqual(await saved('iptables-nft-save'), before);
    assert.equal((await kernelElements(srv!)).length, 0);
  });

  test('the rules become blocks with no packet let through; foreign rules stay; a second run changes nothing', async (t) => {
    // The offender sends all through the migration; the old rules drop it before, rated after.
    const flood = bad!.exec('ping', ['-n', '-i', '0.02', '-c', '300', '-W', '1', SRV]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const t0 = Date.now();
    const r = await cli(['migrate', 'iptables', '--yes', '--for', '2h']);
    const ms = Date.now() - t0;
    assert.equal(r.code, 0, r.stderr);
    const pinged = await flood;
    assert.match(pinged.stdout, / 0 received/, `not one reply during the migration:\n${pinged.stdout}`);
    t.diagnostic(`${2 * OLD + 6} rules migrated in ${ms} ms (CLI start included)`);
    assert.match(r.stdout, new RegExp(`^migrated ${OLD + 3} addresses: ${2 * OLD + 5} rules removed$`, 'm'), r.stdout);
    assert.match(r.stdout, /^the rules of the 1 refused address are left in place$/m, r.stdout);

    const v4 = await saved('iptables-nft-save');
    assert.deepEqual(v4.sort(), [...FOREIGN_V4.filter((l) => !l.startsWith('-A FORWARD')), '-A FORWARD -s 192.0.2.8/32 -j DROP'].sort());
    assert.deepEqual(await saved('ip6tables-nft-save'), ['-A INPUT -p ipv6-icmp -j ACCEPT']);
    assert.deepEqual(await saved('iptables-legacy-save'), []);

    const list = await cli(['list', '--json']);
    const blocks = JSON.parse(list.stdout) as Array<{ ip: string; source: string; reason: string }>;
    assert.equal(blocks.length, OLD + 3);
    for (const ip of [BAD, '192.0.2.30', '2001:db8::9', '11.0.0.0']) {
      const b = blocks.find((x) => x.ip === ip);
      assert.equal(b?.source, 'migrated', ip);
      assert.equal(b.reason, 'migrated from iptables');
    }
    const inKernel = new Map((await kernelElements(srv!)).map((e) => [e.text, e.timeout]));
    assert.equal(inKernel.get(BAD), 7200);
    assert.equal(inKernel.has('198.51.100.7'), false);
    assert.equal((await bad!.exec('ping', ['-n', '-c1', '-W1', SRV])).exitCode, 1, 'the offender is still dropped');

    const again = await cli(['migrate', 'iptables', '--yes']);
    assert.equal(again.code, 0, again.stderr);
    // Only the allow-listed address's rule is still there, and it stays.
    assert.match(again.stdout, /^migrated 0 addresses: 0 rules removed$/m, again.stdout);
    assert.deepEqual((await saved('iptables-nft-save')).sort(), v4.sort());
  });

  test('blocks survive a restart as migrated blocks', async () => {
    await rated?.stop();
    rated = await startRated({ namespace: srv!, config, socket });
    const list = await cli(['list', '--json']);
    const b = (JSON.parse(list.stdout) as Array<{ ip: string; source: string }>).find((x) => x.ip === BAD);
    assert.equal(b?.source, 'migrated');
  });
});
