// systemd/rated.service as shipped, run by a real systemd: a throwaway
// container (its own pid, mount, network, uts, ipc and cgroup namespaces,
// and a root that is an overlay over the host's, so nothing is written to
// the host) boots systemd with a target that wants rated. The install steps
// of the README are done first: the package built by `npm pack` from this
// checkout installed with `npm install -g` (so the checkout itself is not
// seen by the container, wherever it lives, and a package missing a file
// fails here), the system user, the config mode, the unit. Then we
// watch what an operator would: readiness, privileges, the CLI's access,
// blocking, an nftables reload and restart, a config error, uninstall.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { missingPrereqs } from '../helpers/prereq.js';
import { MAIN_JS, ROOT } from '../helpers/rated.js';
import { waitFor } from '../helpers/wait-for.js';

const SYSTEMD = ['/lib/systemd/systemd', '/usr/lib/systemd/systemd'].find((p) => existsSync(p)) ?? null;
/** The unit finds node through systemd's fixed PATH, as it will on a server. */
const NODE_ON_SERVICE_PATH = ['/usr/local/bin/node', '/usr/bin/node'].some((p) => existsSync(p));
const TOOLS = ['unshare', 'nsenter', 'mount', 'chroot', 'useradd', 'nft', 'curl', 'setpriv'];

function missing(): string[] {
  const m = missingPrereqs(TOOLS);
  if (SYSTEMD === null) m.push('systemd (/lib/systemd/systemd)');
  if (!NODE_ON_SERVICE_PATH) m.push('node in /usr/bin or /usr/local/bin');
  if (!readFileSync('/proc/filesystems', 'utf8').includes('\toverlay\n')) m.push('overlayfs');
  return m;
}
const MISSING = missing();
if (MISSING.length > 0 && process.env.CI === 'true') throw new Error(`prerequisite missing in CI (CI=true): needs ${MISSING.join(', ')}`);
const SKIP = MISSING.length > 0 ? `needs ${MISSING.join(', ')}` : false;

const CONFIG = [
  'receivers: { http: { address: 127.0.0.1, port: 8080 }, udp: null }',
  'rules:',
  '  - { name: flood, limit: 3, window: 30s, block: 10m }',
  '',
].join('\n');
const OFFENDER = '192.0.2.66';

/**
 * Runs as PID 1's parent inside the new namespaces: builds the container's
 * root, does the README's install steps in it, and execs systemd there.
 */
const BOOT = `#!/bin/sh
set -eu
base=$1; package=$2; cache=$3; systemd=$4
mount -t tmpfs -o mode=0755 tmpfs "$base"
mkdir "$base/upper" "$base/work" "$base/root" "$base/cache-upper" "$base/cache-work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$base/root"
r=$base/root
# npm's cache, where the package's dependencies are found without a network;
# an overlay again, so what npm writes there stays in the container.
mkdir -p "$r$cache"
mount -t overlay overlay -o "lowerdir=$cache,upperdir=$base/cache-upper,workdir=$base/cache-work" "$r$cache"
mount -t proc proc "$r/proc"
mount --bind "$r/proc/sys" "$r/proc/sys"
mount -o remount,bind,ro "$r/proc/sys"
mount -t sysfs -o ro sysfs "$r/sys"
# A minimal /dev, as container managers give: no console, no kmsg of the host.
mount -t tmpfs -o mode=0755,nosuid tmpfs "$r/dev"
for node in null zero full random urandom tty; do
  : >"$r/dev/$node"
  mount --bind "/dev/$node" "$r/dev/$node"
done
: >"$r/dev/console"
mount --bind /dev/null "$r/dev/console"
mkdir "$r/dev/pts" "$r/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$r/dev/pts"
ln -s pts/ptmx "$r/dev/ptmx"
ln -s /proc/self/fd "$r/dev/fd"
for n in 0:stdin 1:stdout 2:stderr; do ln -s "/proc/self/fd/\${n%%:*}" "$r/dev/\${n#*:}"; done

# Only journald and tmpfiles of early boot: nothing that reaches the kernel's global state.
etc=$r/etc/systemd/system
for unit in "$r"/lib/systemd/system/sysinit.target.wants/* "$etc"/sysinit.target.wants/* \\
    "$r"/lib/systemd/system/systemd-udevd.service "$r"/lib/systemd/system/systemd-udev-trigger.service; do
  [ -e "$unit" ] || [ -L "$unit" ] || continue
  name=\${unit##*/}
  case $name in
    systemd-journald.service|systemd-tmpfiles-setup.service|systemd-tmpfiles-setup-dev.service|systemd-journal-flush.service) ;;
    *) ln -sf /dev/null "$etc/$name" ;;
  esac
done

# The README's install steps.
cp "$package" "$r/root/rated.tgz"
chroot "$r" sh -c 'cd /root && npm install -g --offline --no-audit --no-fund --cache "$1" ./rated.tgz' sh "$cache" >&2
rm "$r/root/rated.tgz"
chroot "$r" useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin rated
chroot "$r" useradd --no-create-home --groups rated ratedadmin
chroot "$r" useradd --no-create-home outsider
install -d -m 0750 -g "$(chroot "$r" id -g rated)" "$r/etc/rated"
install -m 0640 -g "$(chroot "$r" id -g rated)" "$base/../rated.yml" "$r/etc/rated/rated.yml"
install -m 0644 "$r$(chroot "$r" npm root -g)/rated/systemd/rated.service" "$etc/rated.service"
cat >"$etc/rated-test.target" <<'EOF'
[Unit]
Description=rated under test
Wants=rated.service rated-probe.service
EOF
# Ordered after rated: starts once rated says it is ready, and records what it finds.
cat >"$etc/rated-probe.service" <<'EOF'
[Unit]
After=rated.service
Requires=rated.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'curl -s -o /dev/null -w "%%{http_code}" -H "X-IP: 198.51.100.1" http://127.0.0.1:8080/ >/run/probe; echo >>/run/probe; nft list table inet rated >/dev/null && echo table >>/run/probe'
EOF
cd "$r"
mkdir -p oldroot
pivot_root . oldroot
exec chroot . /bin/sh -c 'umount -l /oldroot && rmdir /oldroot; exec env container=rated-test "$1" --unit=rated-test.target --show-status=no' sh "$systemd"
`;

describe('systemd/rated.service under systemd, in a throwaway container', { skip: SKIP }, () => {
  let dir = '';
  let container: ChildProcess | null = null;
  let pid1 = 0;
  const boot: string[] = [];

  /** Runs a command inside the container. */
  const inside = (cmd: string, args: readonly string[], env: Record<string, string> = {}) =>
    execa('nsenter', ['-t', String(pid1), '-a', cmd, ...args], {
      reject: false, timeout: 60_000, env: { SYSTEMD_COLORS: '0', SYSTEMD_PAGER: '', LC_ALL: 'C', ...env },
    });
  const systemctl = (...args: string[]) => inside('systemctl', ['--no-pager', ...args]);
  async function show(...props: string[]): Promise<Record<string, string>> {
    const r = await systemctl('show', 'rated.service', ...props.map((p) => `--property=${p}`));
    return Object.fromEntries(r.stdout.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  }
  async function inSet(addr: string): Promise<boolean> {
    const r = await inside('nft', ['list', 'set', 'inet', 'rated', 'v4']);
    return r.exitCode === 0 && r.stdout.includes(addr);
  }
  /** `systemctl status` and the journal of rated, for failure messages. */
  async function diagnose(err: unknown): Promise<never> {
    const status = await systemctl('status', 'rated.service', '--lines=0');
    const journal = await inside('journalctl', ['--no-pager', '-u', 'rated.service', '-n', '40', '-o', 'cat']);
    throw new Error(`${(err as Error).message}\n--- systemctl status ---\n${status.stdout}\n--- journal ---\n${journal.stdout}${journal.stderr}\n--- boot ---\n${boot.join('')}`, { cause: err });
  }
  /** `rated ARGS` inside, as root or as another user. */
  const cli = (args: readonly string[], user?: string) => (user
    ? inside('setpriv', [`--reuid=${user}`, `--regid=${user}`, '--init-groups', 'rated', ...args])
    : inside('rated', args));
  /** Replaces a file inside the container. */
  const writeInside = (path: string, text: string) => inside('sh', ['-c', 'printf %s "$1" >"$2"', 'sh', text, path]);

  before(async () => {
    assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first (npm run build)`);
    assert.ok(SYSTEMD);
    dir = mkdtempSync(join(tmpdir(), 'rated-systemd-'));
    writeFileSync(join(dir, 'boot.sh'), BOOT);
    chmodSync(join(dir, 'boot.sh'), 0o755);
    writeFileSync(join(dir, 'rated.yml'), CONFIG);
    // The package, as the README builds it (dist/ is already built by the test run).
    const packed = await execa('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', dir], { cwd: ROOT, reject: false });
    const tarball = join(dir, packed.stdout.trim().split('\n').pop() ?? '');
    assert.ok(packed.exitCode === 0 && existsSync(tarball), `npm pack failed: ${packed.stderr}`);
    const cache = (await execa('npm', ['config', 'get', 'cache'])).stdout.trim();
    const base = join(dir, 'base');
    mkdirSync(base);
    container = spawn('unshare', ['--pid', '--kill-child=SIGKILL', '--mount', '--propagation', 'private', '--net', '--uts', '--ipc', '--cgroup',
      join(dir, 'boot.sh'), base, tarball, cache, SYSTEMD], { stdio: ['ignore', 'pipe', 'pipe'] });
    container.stdout?.on('data', (d: Buffer) => boot.push(d.toString()));
    container.stderr?.on('data', (d: Buffer) => boot.push(d.toString()));
    const unsharePid = container.pid;
    assert.ok(unsharePid);
    pid1 = await waitFor(() => {
      if (container?.exitCode !== null) return -1;
      const children = readFileSync(`/proc/${unsharePid}/task/${unsharePid}/children`, 'utf8').trim();
      const pid = Number(children.split(' ')[0]);
      // PID 1 is systemd once boot.sh has exec'd it.
      return pid > 0 && readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'systemd' ? pid : 0;
    }, { timeoutMs: 30_000, intervalMs: 100, what: 'systemd to run in the container' });
    assert.ok(pid1 > 0, `the container exited while booting:\n${boot.join('')}`);
    await waitFor(async () => {
      const state = (await systemctl('is-active', 'rated.service')).stdout.trim();
      if (state === 'failed') throw new Error('rated.service failed');
      return state === 'active';
    }, { timeoutMs: 120_000, intervalMs: 200, what: 'rated.service to be active' }).catch(diagnose);
  });

  after(async () => {
    const problems: unknown[] = [];
    try {
      const child = container;
      if (child && child.exitCode === null && child.signalCode === null) {
        const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        // unshare kills PID 1, and with it every process of the container.
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await gone;
        clearTimeout(timer);
      }
    } catch (err) {
      problems.push(err);
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (problems.length > 0) throw new AggregateError(problems, 'cleanup failed');
  });

  test('the config is installed the README way: root:rated 0640 in a 0750 directory', async () => {
    const r = await inside('stat', ['-c', '%a %U %G', '/etc/rated', '/etc/rated/rated.yml']);
    assert.equal(r.stdout.trim(), '750 root rated\n640 root rated');
  });

  test('it reports ready only once it protects: a unit ordered after it finds the receiver and the table', async () => {
    const s = await show('ActiveState', 'SubState', 'StatusText', 'Type', 'NRestarts');
    assert.deepEqual(s, { Type: 'notify', ActiveState: 'active', SubState: 'running', StatusText: 'protecting with nftables', NRestarts: '0' });
    await waitFor(async () => (await systemctl('is-active', 'rated-probe.service')).stdout.trim() === 'active', {
      timeoutMs: 10_000, what: 'the probe unit',
    }).catch(diagnose);
    const probe = await inside('cat', ['/run/probe']);
    assert.equal(probe.stdout, '204\ntable', 'notification accepted and table present at once');
  });

  test('the daemon runs as the user rated with CAP_NET_ADMIN only, no new privileges, a seccomp filter', async () => {
    const { MainPID } = await show('MainPID');
    const status = (await inside('cat', [`/proc/${MainPID}/status`])).stdout;
    const uid = (await inside('id', ['-u', 'rated'])).stdout.trim();
    assert.match(status, new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'));
    assert.match(status, /^CapEff:\t0000000000001000$/m);
    assert.match(status, /^CapBnd:\t0000000000001000$/m);
    assert.match(status, /^NoNewPrivs:\t1$/m);
    assert.match(status, /^Seccomp:\t2$/m);
    const socket = await inside('stat', ['-c', '%a %U %G %F', '/run/rated', '/run/rated/rated.sock', '/var/lib/rated']);
    assert.equal(socket.stdout.trim(), '750 rated rated directory\n660 rated rated socket\n750 rated rated directory');
  });

  test('root and members of the group rated use the CLI; other users are refused', async () => {
    const root = await cli(['status', '--json']);
    assert.equal(root.exitCode, 0, root.stderr);
    assert.equal((JSON.parse(root.stdout) as { status: string }).status, 'up');
    const admin = await cli(['status', '--json'], 'ratedadmin');
    assert.equal(admin.exitCode, 0, admin.stderr);
    // Neither the configuration nor the socket is theirs to read.
    for (const args of [['status'], ['status', '--socket', '/run/rated/rated.sock', '-c', '/dev/null']]) {
      const outsider = await cli(args, 'outsider');
      assert.notEqual(outsider.exitCode, 0, `${outsider.stdout}${outsider.stderr}`);
      assert.match(outsider.stderr, /^rated: .*permission denied/i);
    }
  });

  test('an offender reported over HTTP is blocked, and the block is logged in the journal', async () => {
    for (let i = 0; i < 4; i++) {
      const r = await inside('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', `X-IP: ${OFFENDER}`, 'http://127.0.0.1:8080/']);
      assert.equal(r.stdout, '204');
    }
    await waitFor(() => inSet(OFFENDER), { timeoutMs: 5000, intervalMs: 100, what: `${OFFENDER} in set v4` }).catch(diagnose);
    const journal = await inside('journalctl', ['--no-pager', '-u', 'rated.service', '-o', 'cat']);
    assert.ok(journal.stdout.split('\n').some((l) => l.includes('"msg":"blocked"') && l.includes(OFFENDER)), journal.stdout);
  });

  test('systemctl reload nftables flushes the ruleset; rated repairs its table at once', async () => {
    const start = await systemctl('start', 'nftables.service');
    assert.equal(start.exitCode, 0, start.stderr);
    const { MainPID } = await show('MainPID');
    const reload = await systemctl('reload', 'nftables.service');
    assert.equal(reload.exitCode, 0, reload.stderr);
    // firewall.checkInterval is 30 s: a repair within 5 s is the propagated reload.
    await waitFor(() => inSet(OFFENDER), { timeoutMs: 5000, intervalMs: 100, what: 'the block back after the nftables reload' }).catch(diagnose);
    assert.equal((await show('MainPID')).MainPID, MainPID, 'repaired in place, not restarted');
    const journal = await inside('journalctl', ['--no-pager', '-u', 'rated.service', '-o', 'cat']);
    assert.match(journal.stdout, /"signal":"SIGHUP".*checking our firewall state now/, 'the reload reached rated as SIGHUP');
    const foreign = await inside('nft', ['list', 'table', 'inet', 'filter']);
    assert.equal(foreign.exitCode, 0, 'the host firewall table is there too');
  });

  test('systemctl restart nftables restarts rated with it; the block is back', async () => {
    const before = (await show('MainPID')).MainPID;
    const restart = await systemctl('restart', 'nftables.service');
    assert.equal(restart.exitCode, 0, restart.stderr);
    await waitFor(async () => {
      const s = await show('ActiveState', 'MainPID');
      return s.ActiveState === 'active' && s.MainPID !== before && s.MainPID !== '0';
    }, { timeoutMs: 20_000, intervalMs: 200, what: 'rated restarted with nftables' }).catch(diagnose);
    // Ready means the receivers answer; the reconcile that puts the flushed blocks back runs just behind (SPEC §7).
    await waitFor(() => inSet(OFFENDER), { timeoutMs: 5000, intervalMs: 100, what: 'the start-up reconcile to put the block back' }).catch(diagnose);
  });

  test('systemctl restart rated (an upgrade) keeps the block', async () => {
    const restart = await systemctl('restart', 'rated.service');
    assert.equal(restart.exitCode, 0, restart.stderr);
    assert.ok(await inSet(OFFENDER));
    const list = await cli(['list', '--json']);
    assert.ok((JSON.parse(list.stdout) as Array<{ ip: string }>).some((b) => b.ip === OFFENDER), list.stdout);
  });

  test('a configuration error fails the start with exit 2 and no restart loop; blocks stay', async () => {
    const good = (await inside('cat', ['/etc/rated/rated.yml'])).stdout;
    await writeInside('/etc/rated/rated.yml', 'firewall:\n  tabel: rated\n');
    const restart = await systemctl('restart', 'rated.service');
    assert.notEqual(restart.exitCode, 0, 'systemctl restart reports the failure');
    // RestartSec=5: a restart would have happened within 7 s.
    const t0 = Date.now();
    while (Date.now() - t0 < 7000) {
      const s = await show('ActiveState', 'NRestarts', 'ExecMainStatus');
      assert.deepEqual(s, { ActiveState: 'failed', NRestarts: '0', ExecMainStatus: '2' });
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    const journal = await inside('journalctl', ['--no-pager', '-u', 'rated.service', '-n', '20', '-o', 'cat']);
    assert.match(journal.stdout, /rated: firewall\.tabel: /);
    assert.ok(await inSet(OFFENDER), 'the block is still in the kernel');

    await writeInside('/etc/rated/rated.yml', good);
    const start = await systemctl('start', 'rated.service');
    assert.equal(start.exitCode, 0, start.stderr);
  });

  test('uninstall: stop, then delete our table; nothing of rated is left and the host table stays', async () => {
    const stop = await systemctl('disable', '--now', 'rated.service');
    assert.equal(stop.exitCode, 0, stop.stderr);
    assert.ok(await inSet(OFFENDER), 'a stop keeps the blocks (they would expire on their own)');
    const del = await inside('nft', ['delete', 'table', 'inet', 'rated']);
    assert.equal(del.exitCode, 0, del.stderr);
    const ruleset = (await inside('nft', ['list', 'ruleset'])).stdout;
    assert.doesNotMatch(ruleset, /rated/);
    assert.match(ruleset, /table inet filter/);
  });

  test('ipset backend: with the CAP_NET_RAW drop-in it runs and blocks; uninstall removes its rule and sets', async () => {
    await writeInside('/etc/rated/rated.yml', `${CONFIG}firewall: { backend: ipset }\n`);
    const dropIn = await inside('install', ['-D', '-m', '0644', `${(await inside('npm', ['root', '-g'])).stdout.trim()}/rated/systemd/cap-net-raw.conf`, '/etc/systemd/system/rated.service.d/cap-net-raw.conf']);
    assert.equal(dropIn.exitCode, 0, dropIn.stderr);
    await systemctl('daemon-reload');
    const start = await systemctl('start', 'rated.service');
    assert.equal(start.exitCode, 0, start.stderr);
    const { MainPID, StatusText } = await show('MainPID', 'StatusText');
    assert.equal(StatusText, 'protecting with ipset');
    assert.match((await inside('cat', [`/proc/${MainPID}/status`])).stdout, /^CapEff:\t0000000000003000$/m, 'CAP_NET_ADMIN and CAP_NET_RAW');
    for (let i = 0; i < 4; i++) await inside('curl', ['-s', '-o', '/dev/null', '-H', 'X-IP: 192.0.2.67', 'http://127.0.0.1:8080/']);
    await waitFor(async () => (await inside('ipset', ['list', 'rated-v4'])).stdout.includes('192.0.2.67'), {
      timeoutMs: 5000, intervalMs: 100, what: '192.0.2.67 in ipset rated-v4',
    }).catch(diagnose);

    const stop = await systemctl('stop', 'rated.service');
    assert.equal(stop.exitCode, 0, stop.stderr);
    // The uninstall steps of docs/service.md: each set's rule, then the sets.
    for (const [tool, set] of [['iptables', 'rated-v4'], ['iptables', 'rated-v4net'], ['ip6tables', 'rated-v6'], ['ip6tables', 'rated-v6net']] as const) {
      const r = await inside(tool, ['-w', '-D', 'INPUT', '-m', 'set', '--match-set', set, 'src', '-j', 'DROP']);
      assert.equal(r.exitCode, 0, `${tool} -D ${set}: ${r.stderr}`);
    }
    const d = await inside('ipset', ['destroy', 'rated-v4']);
    assert.equal(d.exitCode, 0, `ipset destroy rated-v4: ${d.stderr}`);
    for (const set of ['rated-v4net', 'rated-v6', 'rated-v6net']) {
      const x = await inside('ipset', ['destroy', set]);
      assert.equal(x.exitCode, 0, `ipset destroy ${set}: ${x.stderr}`);
    }
    const rules = `${(await inside('iptables', ['-w', '-S'])).stdout}${(await inside('ip6tables', ['-w', '-S'])).stdout}`;
    assert.doesNotMatch(rules, /rated/);
    assert.doesNotMatch((await inside('ipset', ['list', '-n'])).stdout, /rated/);
  });
});
