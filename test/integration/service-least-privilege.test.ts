// Least privilege: the daemon as an ordinary user (65534) with CAP_NET_ADMIN
// as its only capability, the way the systemd unit and the runit script run
// it, blocks an offender with nftables and iptables; ipset also needs
// CAP_NET_RAW, because iptables' set match reaches ipset through a raw
// socket. Root's CLI and members of the socket's group talk to the daemon,
// other users cannot.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNamespace, veth, type Namespace } from '../helpers/netns.js';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { MAIN_JS, ratedCli, startRated, type Rated } from '../helpers/rated.js';
import { waitFor } from '../helpers/wait-for.js';
import { cleanUp } from '../helpers/cleanup.js';

const TOOLS = ['ip', 'nft', 'ipset', 'iptables', 'ip6tables', 'setpriv', 'curl', 'ping'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;

const NOBODY = 65534;
/** What the unit and the runit script grant: one user, these capabilities, no way back up. */
function least(caps: string): string[] {
  return ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups',
    `--inh-caps=-all,${caps}`, `--ambient-caps=-all,${caps}`, `--bounding-set=-all,${caps}`, '--no-new-privs'];
}
const CAP_NET_ADMIN = 1n << 12n;
const CAP_NET_RAW = 1n << 13n;
const PORT = 8090;
const SRV = '192.0.2.1';
const BAD = '192.0.2.2';
const RULE = { limit: 3 };

type Backend = 'nftables' | 'ipset' | 'iptables';

/** Whether our firewall state holds `addr`, read the way an operator would. */
async function holds(ns: Namespace, backend: Backend, addr: string): Promise<boolean> {
  switch (backend) {
    case 'nftables':
      return (await ns.run('nft', ['list', 'set', 'inet', 'rated', 'v4'])).stdout.includes(addr);
    case 'ipset':
      return (await ns.run('ipset', ['list', 'rated-v4'])).stdout.split('\n').some((l) => l.startsWith(`${addr} `) || l === addr);
    case 'iptables':
      return (await ns.run('iptables', ['-w', '-S', 'rated'])).stdout.includes(`-s ${addr}/32 `);
  }
}

/** Real, effective, bounding and ambient credentials of a process. */
function credentials(pid: number): { uid: string; gid: string; groups: string; eff: bigint; bnd: bigint; amb: bigint; noNewPrivs: string } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): string => new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(status)?.[1]?.trim() ?? '';
  return {
    uid: field('Uid'), gid: field('Gid'), groups: field('Groups'),
    eff: BigInt(`0x${field('CapEff')}`), bnd: BigInt(`0x${field('CapBnd')}`), amb: BigInt(`0x${field('CapAmb')}`),
    noNewPrivs: field('NoNewPrivs'),
  };
}

const CASES = [
  { backend: 'nftables', caps: '+net_admin', mask: CAP_NET_ADMIN },
  { backend: 'iptables', caps: '+net_admin', mask: CAP_NET_ADMIN },
  { backend: 'ipset', caps: '+net_admin,+net_raw', mask: CAP_NET_ADMIN | CAP_NET_RAW },
] as const;

for (const { backend, caps, mask } of CASES) {
  describe(`least privilege, ${backend}: uid ${NOBODY} with ${caps.replace(/\+/g, '').replace(',', ' and ')} only`, { skip: SKIP }, () => {
    let dir = '';
    let srv: Namespace | null = null;
    let bad: Namespace | null = null;
    let rated: Rated | null = null;
    let config = '';
    let socket = '';
    const logs = (): string => `\n--- rated log ---\n${rated?.output(30) ?? '(not started)'}`;

    before(async () => {
      assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first (npm run build)`);
      dir = mkdtempSync(join(tmpdir(), 'rated-least-'));
      chmodSync(dir, 0o755);
      // What the unit's RuntimeDirectory= and StateDirectory= give it: its own 0750 directories.
      for (const sub of ['run', 'state']) {
        mkdirSync(join(dir, sub), { mode: 0o750 });
        chownSync(join(dir, sub), NOBODY, NOBODY);
      }
      socket = join(dir, 'run', 'rated.sock');
      config = join(dir, 'rated.yml');
      writeFileSync(config, [
        `receivers: { http: { address: 127.0.0.1, port: ${PORT} }, udp: null }`,
        'rules:',
        `  - { name: flood, limit: ${RULE.limit}, window: 30s, block: 10m }`,
        `firewall: { backend: ${backend}, checkInterval: 2s }`,
        `control: { socket: ${socket} }`,
        `state: { dir: ${join(dir, 'state')} }`,
        '',
      ].join('\n'), { mode: 0o644 });
      srv = await createNamespace('rtd-lp');
      bad = await createNamespace('rtd-lpc');
      await veth(srv, bad, { a: `${SRV}/24`, b: `${BAD}/24` });
      rated = await startRated({ namespace: srv, config, wrap: least(caps) });
    });

    after(async () => {
      await cleanUp([() => rated?.stop(), () => bad?.delete(), () => srv?.delete(), () => { if (dir) rmSync(dir, { recursive: true, force: true }); }]);
    });

    test(`starts on ${backend}, as uid ${NOBODY}, with no other capability`, () => {
      assert.ok(rated);
      assert.equal(rated.started.backend, backend, `it did not fall back to another backend${logs()}`);
      assert.equal(rated.started.control, socket);
      const creds = credentials(rated.pid);
      assert.equal(creds.uid, `${NOBODY}\t${NOBODY}\t${NOBODY}\t${NOBODY}`);
      assert.equal(creds.gid, `${NOBODY}\t${NOBODY}\t${NOBODY}\t${NOBODY}`);
      assert.equal(creds.groups, '');
      assert.equal(creds.eff, mask, `effective capabilities: ${creds.eff.toString(16)}`);
      assert.equal(creds.bnd, mask, `bounding set: ${creds.bnd.toString(16)}`);
      assert.equal(creds.amb, mask);
      assert.equal(creds.noNewPrivs, '1');
    });

    test('the socket and the lock belong to the daemon\'s user; the socket is 0660', () => {
      const st = statSync(socket);
      assert.ok(st.isSocket());
      assert.equal(st.uid, NOBODY);
      assert.equal(st.mode & 0o777, 0o660);
      const lock = statSync(join(dir, 'state', 'rated.pid'));
      assert.equal(lock.uid, NOBODY);
    });

    test('an offender over the limit is blocked and its packets are dropped', async () => {
      assert.ok(srv && bad);
      const ns = srv;
      const client = bad;
      const ping = async (): Promise<number> => (await client.exec('ping', ['-c', '1', '-W', '1', SRV])).exitCode;
      assert.equal(await ping(), 0, 'before the flood the client reaches the server');
      for (let i = 0; i <= RULE.limit; i++) {
        const r = await ns.run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', `X-IP: ${BAD}`, `http://127.0.0.1:${PORT}/`]);
        assert.equal(r.stdout, '204', `notification ${i + 1} accepted`);
      }
      await waitFor(() => holds(ns, backend, BAD), { timeoutMs: 5000, intervalMs: 100, what: `${BAD} in our ${backend} state` }).catch((err: unknown) => {
        throw new Error(`${(err as Error).message}${logs()}`, { cause: err });
      });
      assert.notEqual(await ping(), 0, 'the offender\'s ping is dropped');
    });

    test('root\'s CLI talks to it: list, block, unblock', async () => {
      assert.ok(srv);
      const ns = srv;
      const list = await ratedCli(ns, ['list', '--json', '-c', config]);
      assert.equal(list.code, 0, list.stderr);
      const blocks = JSON.parse(list.stdout) as Array<{ ip: string; source: string }>;
      assert.ok(blocks.some((b) => b.ip === BAD && b.source === 'rule'), `${BAD} listed by the daemon: ${list.stdout}`);
      const block = await ratedCli(ns, ['block', '203.0.113.9', '--for', '1h', '-c', config]);
      assert.equal(block.code, 0, `${block.stderr}${logs()}`);
      assert.ok(await holds(ns, backend, '203.0.113.9'), 'the manual block reached the kernel');
      const unblock = await ratedCli(ns, ['unblock', '203.0.113.9', '-c', config]);
      assert.equal(unblock.code, 0, unblock.stderr);
      assert.ok(!(await holds(ns, backend, '203.0.113.9')), 'and left it again');
    });

    test('a member of the socket\'s group may use the CLI; any other user may not', async () => {
      assert.ok(srv);
      const member = await ratedCli(srv, ['status', '--json', '-c', config], { wrap: ['setpriv', '--reuid=4242', '--regid=4242', `--groups=${NOBODY}`] });
      assert.equal(member.code, 0, member.stderr);
      assert.equal((JSON.parse(member.stdout) as { status: string }).status, 'up');
      const other = await ratedCli(srv, ['status', '--json', '--socket', socket, '-c', config], { wrap: ['setpriv', '--reuid=4242', '--regid=4242', '--clear-groups'] });
      assert.notEqual(other.code, 0, `a stranger got: ${other.stdout}`);
      assert.equal(other.stderr.trim().split('\n').length, 1, `one line on stderr: ${other.stderr}`);
      assert.match(other.stderr, /permission denied/);
    });

    test('SIGTERM: exits 0 and the block stays in the kernel', async () => {
      assert.ok(rated && srv);
      const exit = await rated.stop();
      assert.equal(exit.code, 0, `exit ${JSON.stringify(exit)}${logs()}`);
      assert.ok(await holds(srv, backend, BAD), `${BAD} is still blocked`);
    });
  });
}

describe('least privilege, ipset with CAP_NET_ADMIN alone', { skip: SKIP }, () => {
  test('refuses to start, in one line that names the failing step', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'rated-least-'));
    const ns = await createNamespace('rtd-lpr');
    t.after(async () => {
      await ns.delete();
      rmSync(dir, { recursive: true, force: true });
    });
    chmodSync(dir, 0o755);
    mkdirSync(join(dir, 'state'), { mode: 0o750 });
    chownSync(join(dir, 'state'), NOBODY, NOBODY);
    const config = join(dir, 'rated.yml');
    writeFileSync(config, [
      'receivers: { http: null, udp: null }',
      'firewall: { backend: ipset }',
      `control: { socket: ${join(dir, 'state', 'rated.sock')} }`,
      `state: { dir: ${join(dir, 'state')} }`,
      '',
    ].join('\n'), { mode: 0o644 });
    const r = await ratedCli(ns, ['run', '-c', config], { wrap: least('+net_admin'), timeoutMs: 15_000 });
    assert.equal(r.code, 1, `exit 1, got ${r.code}: ${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line on stderr: ${r.stderr}`);
    assert.match(lines[0] ?? '', /ipset/);
  });
});
