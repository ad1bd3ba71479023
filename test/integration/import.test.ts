// Moving in (rated import, rated export): a real blocklist file, a real
// fail2ban database made by fail2ban's own code, `cscli decisions list -o
// json` output on stdin, and rated's own export, imported into the built
// daemon on real nftables in a namespace — and with the daemon down. What an
// operator observes: the counts printed, `rated list`, the kernel's set with
// each element's time, the offender's packets dropped, and bad input answered
// with exit 2 and nothing half-applied.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanUp } from '../helpers/cleanup.js';
import { makeFail2banDb } from '../helpers/fail2ban.js';
import { kernelElements } from '../helpers/kernel-set.js';
import type { Namespace } from '../helpers/netns.js';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { startRated, type CliResult, type Rated } from '../helpers/rated.js';
import { serverLab, type ServerLab } from '../helpers/server-lab.js';
import { waitFor } from '../helpers/wait-for.js';

const TOOLS = ['ip', 'nft', 'ping', 'python3', 'fail2ban-server'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;
const SRV = '10.89.1.1';
const BAD = '10.89.1.2';

interface BlockJson { ip: string; reason: string | null; source: string; expires: string | null }

describe('rated import and export', { skip: SKIP }, () => {
  let lab: ServerLab | undefined;
  let srv: Namespace | undefined;
  let dir = '';
  let config = '';
  let socket = '';
  let rated: Rated | undefined;

  before(async () => {
    lab = await serverLab({ name: 'imp', server: SRV, client: BAD, block: '10m', allow: ['198.51.100.0/24'] });
    ({ srv, dir, config, socket } = lab);
  });

  after(() => cleanUp([() => rated?.stop(), () => lab?.cleanup()]));

  const ping = (): Promise<boolean> => lab!.ping();
  const cli = (args: readonly string[], input?: string): Promise<CliResult> => lab!.cli(args, input);
  async function list(): Promise<BlockJson[]> {
    const r = await cli(['list', '--json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as BlockJson[];
  }
  const timeouts = async (): Promise<Map<string, number | null>> => new Map((await kernelElements(srv!)).map((e) => [e.text, e.timeout]));

  test('a blocklist file: comments and trailing text skipped, bad lines counted with where they are, the offender dropped', async () => {
    rated = await startRated({ namespace: srv!, config, socket });
    assert.ok(await ping(), 'the offender reaches the server before the import');
    const file = join(dir, 'drop.txt');
    writeFileSync(file, [
      '; Spamhaus-style header',
      '# a comment line',
      `${BAD} ; SBL000001`,
      '203.0.113.0/24 ; SBL000002',
      '203.0.113.9\tsome trailing text',
      '2001:db8:0:0:0:0:0:7     # an IPv6 address, held as the one address it names',
      '198.51.100.7 # allow-listed',
      '127.0.0.1',
      '0.0.0.1 # this network: not an address a client has',
      'not-an-address',
      '999.1.1.1',
      `${BAD} # again`,
      '',
    ].join('\n'));
    const r = await cli(['import', file, '--for', '2h']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^read 6 addresses from 1 source \(1 repeated, merged\)$/m, r.stdout);
    assert.match(r.stdout, /^blocked 4 \(4 new, 0 extended\); 0 already blocked/m, r.stdout);
    assert.match(r.stdout, /^refused 2: allow-listed 2$/m, r.stdout);
    assert.match(r.stdout, /^skipped 3: invalid 3$/m, r.stdout);
    assert.match(r.stdout, /drop\.txt:10: "not-an-address"/, r.stdout);
    await waitFor(async () => !(await ping()), { timeoutMs: 10_000, what: 'the imported offender\'s ping to fail' });
    const blocks = await list();
    const bad1 = blocks.find((b) => b.ip === BAD);
    assert.ok(bad1, JSON.stringify(blocks));
    assert.equal(bad1.source, 'manual');
    assert.equal(bad1.reason, 'imported from drop.txt');
    assert.deepEqual(blocks.map((b) => b.ip).sort(), [BAD, '203.0.113.0/24', '203.0.113.9', '2001:db8::7'].sort());
    const t = await timeouts();
    assert.equal(t.get(BAD), 7200, 'the element has the --for time');
    assert.equal(t.has('127.0.0.1'), false);
    assert.equal(t.has('0.0.0.1'), false);
  });

  test('the same file again adds nothing (a shorter time shortens nothing); --dry-run says what would happen and changes nothing', async () => {
    const before = await list();
    const again = await cli(['import', join(dir, 'drop.txt'), '--for', '1h']);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /^blocked 0 \(0 new, 0 extended\); 4 already blocked/m, again.stdout);
    const file = join(dir, 'new.txt');
    writeFileSync(file, '192.0.2.50\n192.0.2.51\n');
    const dry = await cli(['import', file, '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /^would block 2 \(2 new, 0 extended\)/m, dry.stdout);
    assert.deepEqual((await list()).map((b) => b.ip).sort(), before.map((b) => b.ip).sort());
  });

  test('CrowdSec decisions on stdin: bans for their remaining time, captchas and expired ones skipped', async () => {
    const alerts = [
      {
        id: 1, scenario: 'crowdsecurity/http-probing', source: { ip: '192.0.2.60', scope: 'Ip', value: '192.0.2.60' },
        decisions: [
          { id: 11, origin: 'crowdsec', type: 'ban', scope: 'Ip', value: '192.0.2.60', duration: '3h59m50.123456789s', scenario: 'crowdsecurity/http-probing' },
          { id: 12, origin: 'crowdsec', type: 'captcha', scope: 'Ip', value: '192.0.2.61', duration: '1h', scenario: 'crowdsecurity/http-probing' },
        ],
      },
      { id: 2, scenario: 'crowdsecurity/ssh-bf', decisions: [{ id: 21, origin: 'cscli', type: 'ban', scope: 'Range', value: '192.0.2.128/25', duration: '30m0s', scenario: 'manual ban' }] },
      { id: 3, scenario: 'crowdsecurity/ssh-bf', decisions: [{ id: 31, origin: 'crowdsec', type: 'ban', scope: 'Ip', value: '192.0.2.70', duration: '-5m3s', scenario: 'crowdsecurity/ssh-bf' }] },
    ];
    const r = await cli(['import', '-', '--format', 'crowdsec'], JSON.stringify(alerts));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^blocked 2 \(2 new/m, r.stdout);
    assert.match(r.stdout, /^skipped 2: (not a ban 1, expired 1|expired 1, not a ban 1)$/m, r.stdout);
    const t = await timeouts();
    const probing = t.get('192.0.2.60');
    assert.ok(probing !== undefined && probing !== null && probing > 14_380 && probing <= 14_391, `remaining time kept: ${String(probing)}`);
    assert.equal(t.get('192.0.2.128/25'), 1800);
    const b = (await list()).find((x) => x.ip === '192.0.2.60');
    assert.equal(b?.reason, 'crowdsecurity/http-probing');
  });

  test('bad input: an unknown format, an unreadable file, a file that is no format: exit 2 naming it, nothing blocked', async () => {
    const before = (await list()).length;
    const good = join(dir, 'good.txt');
    writeFileSync(good, '192.0.2.80\n');
    const unknown = await cli(['import', good, '--format', 'csv']);
    assert.equal(unknown.code, 2, unknown.stderr);
    assert.match(unknown.stderr, /format/);
    const missing = await cli(['import', good, join(dir, 'missing.txt')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^rated: .*missing\.txt: cannot read: ENOENT\n$/);
    const binary = join(dir, 'binary.dat');
    writeFileSync(binary, Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 0, 0, 1, 2, 3]));
    const garbage = await cli(['import', good, binary]);
    assert.equal(garbage.code, 2);
    assert.match(garbage.stderr, /binary\.dat: not a format rated imports/);
    const json = await cli(['import', '-', '--format', 'crowdsec'], '{"not": "an array"');
    assert.equal(json.code, 2);
    assert.match(json.stderr, /stdin|-: not JSON/);
    assert.equal((await list()).length, before, 'the good file before the bad one was not applied');
    assert.equal(rated?.hasExited(), false);
  });

  test('export, flush, import the export: the same blocks with the same expiry', async () => {
    const json = await cli(['export', '--format', 'json']);
    assert.equal(json.code, 0, json.stderr);
    const exported = JSON.parse(json.stdout) as BlockJson[];
    assert.deepEqual(exported.map((b) => b.ip).sort(), (await list()).map((b) => b.ip).sort());
    const text = await cli(['export']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`^${BAD.replace(/\./g, '\\.')} # until \\S+, manual, imported from drop\\.txt$`, 'm'));
    assert.equal((await cli(['flush', '--yes'])).code, 0);
    assert.equal((await list()).length, 0);
    const back = await cli(['import', '-'], json.stdout);
    assert.equal(back.code, 0, back.stderr);
    const restored = await list();
    assert.deepEqual(restored.map((b) => b.ip).sort(), exported.map((b) => b.ip).sort());
    for (const b of restored) {
      const was = exported.find((e) => e.ip === b.ip);
      assert.ok(was?.expires && b.expires, b.ip);
      assert.ok(Math.abs(Date.parse(b.expires) - Date.parse(was.expires)) <= 2000, `${b.ip}: ${b.expires} vs ${was.expires}`);
      assert.equal(b.reason, was.reason);
    }
    await waitFor(async () => !(await ping()), { timeoutMs: 10_000, what: 'the offender dropped again' });
  });

  test('fail2ban\'s database with the daemon down: bans in force for their time left, reason the jail; the daemon adopts them', async () => {
    await rated?.stop();
    assert.equal((await cli(['flush', '--yes'])).code, 0);
    const now = Math.floor(Date.now() / 1000);
    const db = join(dir, 'fail2ban.sqlite3');
    await makeFail2banDb(db, [
      { jail: 'sshd', ip: BAD, timeofban: now - 600, bantime: 3600 },
      { jail: 'nginx-http-auth', ip: '192.0.2.90', timeofban: now - 100, bantime: -1 },
      { jail: 'sshd', ip: '192.0.2.91', timeofban: now - 7200, bantime: 3600 },
      { jail: 'recidive', ip: '2001:db8:5::1', timeofban: now, bantime: 604800 },
    ]);
    const r = await cli(['import', db]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^blocked 3 \(3 new/m, r.stdout);
    assert.match(r.stdout, /^skipped 1: expired 1$/m, r.stdout);
    const t = await timeouts();
    const left = t.get(BAD);
    assert.ok(left !== undefined && left !== null && left > 2990 && left <= 3000, `sshd ban with its time left: ${String(left)}`);
    assert.ok((t.get('192.0.2.90') ?? 0) > 3649 * 86400, 'a permanent ban is kept for the longest time rated blocks');
    assert.ok(!(await ping()), 'dropped with the daemon down');
    rated = await startRated({ namespace: srv!, config, socket });
    const blocks = await list();
    const sshd = blocks.find((b) => b.ip === BAD);
    assert.equal(sshd?.reason, 'sshd', JSON.stringify(blocks));
    assert.equal(sshd.source, 'manual');
    assert.equal(blocks.find((b) => b.ip === '2001:db8:5::1')?.reason, 'recidive');
    assert.equal(rated.started.adopted, 0, 'known from the journal, not adopted as strangers');
  });

  test('20,000 blocklist entries through the daemon: every one in the kernel', async (t) => {
    const lines: string[] = [];
    for (let i = 0; i < 20_000; i++) lines.push(`11.${i >> 16}.${(i >> 8) & 255}.${i & 255}`);
    const file = join(dir, 'big.txt');
    writeFileSync(file, `${lines.join('\n')}\n`);
    const t0 = Date.now();
    const r = await cli(['import', file, '--for', '1h']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^blocked 20000 \(20000 new/m, r.stdout);
    t.diagnostic(`20,000 entries imported in ${Date.now() - t0} ms (CLI start included)`);
    const v4 = (await kernelElements(srv!)).filter((e) => e.text.startsWith('11.'));
    assert.equal(v4.length, 20_000);
  });
});
