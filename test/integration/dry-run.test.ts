// `rated run --dry-run` as an ordinary user on the embedded defaults: it may
// not create /run/rated, so it uses a socket of its own that the CLI finds
// too; it decides, logs and lists blocks and touches no firewall.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNamespace, type Namespace } from '../helpers/netns.js';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { MAIN_JS, startRated, type CliResult, type Rated } from '../helpers/rated.js';
import { waitFor } from '../helpers/wait-for.js';
import { cleanUp } from '../helpers/cleanup.js';

const TOOLS = ['ip', 'setpriv', 'curl', 'nft', 'iptables', 'ip6tables', 'ipset'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;
const NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
// The embedded defaults: the default rule allows 360 requests in 120 s.
const LIMIT = 360;

interface BlockJson { ip: string; rule: string | null; source: string; expires: string | null; hits: number | null }

describe('dry run without root, on the embedded defaults', { skip: SKIP }, () => {
  let ns: Namespace;
  let dir = '';
  let runtime = '';
  let rated: Rated | null = null;
  let firewallBefore = '';

  /** Everything the firewall tools show in the namespace. */
  async function firewall(): Promise<string> {
    const parts = [
      await ns.run('nft', ['list', 'ruleset']),
      await ns.run('iptables', ['-w', '-S']),
      await ns.run('ip6tables', ['-w', '-S']),
      await ns.run('ipset', ['list', '-name']),
    ];
    return parts.map((p) => p.stdout).join('---\n');
  }

  const cli = (args: readonly string[]): Promise<CliResult> => {
    if (!rated) throw new Error('rated is not running');
    return rated.cli(args);
  };
  const logs = (): string => `\n--- rated log ---\n${rated?.output(40) ?? '(not started)'}`;

  before(async () => {
    assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first (npm run build)`);
    assert.ok(!existsSync('/etc/rated/rated.yml'), 'this test needs a host without /etc/rated/rated.yml, so that rated runs on its embedded defaults');
    dir = mkdtempSync(join(tmpdir(), 'rated-dry-'));
    chmodSync(dir, 0o755);
    // The user's runtime directory, as a login session provides it.
    runtime = join(dir, 'runtime');
    mkdirSync(runtime, { mode: 0o700 });
    chownSync(runtime, 65534, 65534);
    ns = await createNamespace('rtd-dry');
    firewallBefore = await firewall();
    // No -c, no --socket, no $RATED_CONFIG: control.socket is /run/rated/rated.sock, which nobody may create.
    const wrap = ['env', '-u', 'RATED_CONFIG', `XDG_RUNTIME_DIR=${runtime}`, ...NOBODY];
    rated = await startRated({ namespace: ns, wrap, args: ['--dry-run'] });
  });

  after(async () => {
    await cleanUp([
      () => rated?.stop(),
      () => ns.delete(),
      () => { if (dir) rmSync(dir, { recursive: true, force: true }); },
    ]);
  });

  test('it starts on its embedded defaults, on the dry-run backend, with the user\'s own socket', () => {
    assert.ok(rated);
    assert.equal(rated.started.backend, 'dry-run');
    assert.equal(rated.started.config, 'embedded defaults');
    assert.equal(rated.started.control, join(runtime, 'rated.sock'));
    const warning = rated.lines.find((l) => l.control === join(runtime, 'rated.sock') && l.configured === '/run/rated/rated.sock');
    assert.ok(warning, `a warning names both sockets${logs()}`);
    assert.match(String(warning.err), /EACCES/);
  });

  test('the CLI of the same user finds it without --socket', async () => {
    const status = await cli(['status', '--json']);
    assert.equal(status.code, 0, status.stderr);
    const s = JSON.parse(status.stdout) as { status: string; backend: string; table: string | null };
    assert.deepEqual([s.status, s.backend, s.table], ['up', 'dry-run', null]);
  });

  test('an offender is decided, logged and listed, and no firewall is touched', async () => {
    const receiver = 'http://127.0.0.1:8080/';
    const r = await ns.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}\\n', '-H', 'X-IP: 192.0.2.7',
      ...Array.from({ length: LIMIT + 1 }, () => receiver)]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual([...new Set(r.stdout.trim().split('\n'))], ['204']);
    const line = await rated!.waitForLine((l) => l.msg === 'blocked' && l.ip === '192.0.2.7', { timeoutMs: 5000 });
    assert.equal(line.rule, 'default');

    const blocks = await waitFor(async () => {
      const list = await cli(['list', '--json']);
      return list.code === 0 ? (JSON.parse(list.stdout) as BlockJson[]) : null;
    }, { what: 'rated list --json to answer' });
    const b = blocks.find((x) => x.ip === '192.0.2.7');
    assert.ok(b, `listed: ${JSON.stringify(blocks)}`);
    assert.equal(b.rule, 'default');
    assert.equal(b.source, 'rule');
    assert.equal(b.hits, LIMIT + 1);

    const manual = await cli(['block', '203.0.113.0/24', '--for', '1h']);
    assert.equal(manual.code, 0, manual.stderr);
    const unblock = await cli(['unblock', '192.0.2.7']);
    assert.equal(unblock.code, 0, unblock.stderr);
    assert.deepEqual((JSON.parse((await cli(['list', '--json'])).stdout) as BlockJson[]).map((x) => x.ip), ['203.0.113.0/24']);

    assert.equal(await firewall(), firewallBefore, 'nft, iptables, ip6tables and ipset show exactly what they showed before');
  });

  test('rated explain says why: allowed by which entry, blocked by what and until when, counts per rule', async () => {
    const receiver = 'http://127.0.0.1:8080/';
    const r = await ns.exec('curl', ['-s', '-o', '/dev/null', '-H', 'X-IP: 198.51.100.44', ...Array.from({ length: 12 }, () => receiver)]);
    assert.equal(r.exitCode, 0, r.stderr);
    const counted = await waitFor(async () => {
      const e = await cli(['explain', '198.51.100.44', '--json']);
      assert.equal(e.code, 0, e.stderr);
      const j = JSON.parse(e.stdout) as { rules: Array<{ rule: string; hits: number; limit: number; toBlock: number }>; blocked: unknown; allowed: unknown };
      return j.rules[0]?.hits === 12 ? j : null;
    }, { what: 'the 12 hits in the explanation' });
    assert.deepEqual(counted.rules, [{ rule: 'default', hits: 12, limit: LIMIT, window: '2m', toBlock: LIMIT + 1 - 12 }]);
    assert.equal(counted.blocked, null);
    assert.equal(counted.allowed, null);

    const inside = await cli(['explain', '203.0.113.9']);
    assert.equal(inside.code, 0, inside.stderr);
    assert.match(inside.stdout, /^blocked: {2}yes as 203\.0\.113\.0\/24, by rated block \(manual\), until /m, `the manual /24 holds it${logs()}`);
    const local = await cli(['explain', '127.0.0.1', '--json']);
    assert.match((JSON.parse(local.stdout) as { allowed: string }).allowed, /^allow 127\.0\.0\.0\/8$/);
    const v6 = await cli(['explain', '2001:db8:1:2::99', '--json']);
    assert.equal((JSON.parse(v6.stdout) as { client: string }).client, '2001:db8:1:2::/64');
    const bad = await cli(['explain', 'not-an-ip']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /expected an IP address or CIDR network/);
  });

  test('SIGTERM: it stops cleanly and removes its socket', async () => {
    const exit = await rated!.stop();
    assert.equal(exit.code, 0, `exit 0: ${JSON.stringify(exit)}${logs()}`);
    assert.equal(existsSync(join(runtime, 'rated.sock')), false);
  });
});
