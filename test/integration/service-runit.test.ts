// The runit service as shipped (runit/run, runit/finish, runit/log/run),
// supervised by a real runsv inside a network namespace: it drops to an
// ordinary user with CAP_NET_ADMIN, blocks, logs through svlogd with
// timestamps, repairs on `sv hup`, keeps blocks over `sv down`, takes over a
// state directory a root-run version left, and stays down on a config error.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import type { CommandResult } from '../../src/run-command.js';
import { createNamespace, type Namespace } from '../helpers/netns.js';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { BIN, MAIN_JS, ROOT, ratedCli, startRated } from '../helpers/rated.js';
import { waitFor } from '../helpers/wait-for.js';
import { cleanUp } from '../helpers/cleanup.js';

const TOOLS = ['ip', 'nft', 'setpriv', 'curl', 'runsv', 'sv', 'svlogd', 'chpst'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;
const SCRIPTS = ['run', 'finish', 'log/run'] as const;

const NOBODY = 65534;
const PORT = 8091;
const OFFENDER = '192.0.2.77';
const OLD_BLOCK = '203.0.113.50';
/** svlogd -tt: `2026-11-23_10:00:00.12345 ` before every line. */
const STAMP = /^\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d\.\d{5} /;

describe('runit scripts', () => {
  for (const script of SCRIPTS) {
    test(`runit/${script} is POSIX sh that sh -n accepts`, async (t) => {
      if (!prereqsMet(['sh'], false)) return t.skip('needs sh');
      const file = join(ROOT, 'runit', script);
      assert.match(readFileSync(file, 'utf8'), /^#!\/bin\/sh\n/);
      assert.equal(statSync(file).mode & 0o111, 0o111, 'executable');
      const r = await execa('sh', ['-n', file], { reject: false });
      assert.equal(r.exitCode, 0, r.stderr);
    });
  }
});

describe('runit service under runsv, in a namespace', { skip: SKIP }, () => {
  let dir = '';
  let svc = '';
  let config = '';
  let ns: Namespace | null = null;
  let runsv: ChildProcess | null = null;
  const daemonPids = new Set<number>();
  const stateDir = (): string => join(dir, 'state');
  /** The journal's files (its snapshot and logs) with their owners. */
  const journalFiles = (): Array<[string, number]> => readdirSync(stateDir())
    .filter((name) => /^blocks(\.json|-\d+\.log)$/.test(name))
    .map((name) => [name, statSync(join(stateDir(), name)).uid]);
  const logFile = (): string => join(dir, 'log', 'current');
  const log = (): string => (existsSync(logFile()) ? readFileSync(logFile(), 'utf8') : '');
  const sv = (...args: string[]) => execa('sv', [...args, svc], { reject: false, timeout: 20_000 });
  const cli = (args: readonly string[]) => {
    assert.ok(ns);
    return ratedCli(ns, [...args, '-c', config]);
  };
  async function inSet(addr: string): Promise<boolean> {
    assert.ok(ns);
    const r = await ns.exec('nft', ['list', 'set', 'inet', 'rated', 'v4']);
    return r.exitCode === 0 && r.stdout.includes(addr);
  }
  /** The pid runsv reports for the service, or null when it is down. */
  async function servicePid(): Promise<number | null> {
    const m = /^run: \S+: \(pid (\d+)\)/.exec((await sv('status')).stdout);
    return m ? Number(m[1]) : null;
  }
  const withLog = (err: unknown): never => {
    throw new Error(`${(err as Error).message}\n--- svlogd current ---\n${log().split('\n').slice(-30).join('\n')}`, { cause: err });
  };

  before(async () => {
    assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first (npm run build)`);
    dir = mkdtempSync(join(tmpdir(), 'rated-runit-'));
    chmodSync(dir, 0o755);
    svc = join(dir, 'sv', 'rated');
    mkdirSync(join(svc, 'log'), { recursive: true });
    for (const script of SCRIPTS) copyFileSync(join(ROOT, 'runit', script), join(svc, script));
    for (const script of SCRIPTS) chmodSync(join(svc, script), 0o755);
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    symlinkSync(BIN, join(bin, 'rated'));
    config = join(dir, 'rated.yml');
    writeConfig('valid');
    // The settings an operator puts in ./conf.
    writeFileSync(join(svc, 'conf'), [
      'RATED_USER=nobody',
      'RATED_GROUP=nogroup',
      `RATED_RUNTIME_DIR=${join(dir, 'run')}`,
      `RATED_STATE_DIR=${stateDir()}`,
      `RATED_CONFIG=${config}`,
      `RATED_LOG_DIR=${join(dir, 'log')}`,
      '',
    ].join('\n'));
    ns = await createNamespace('rtd-runit');

    // A version that ran as root left a block in a root-owned journal.
    const old = await startRated({ namespace: ns, config });
    const blocked = await old.cli(['block', OLD_BLOCK, '--for', '1h']);
    assert.equal(blocked.code, 0, blocked.stderr);
    assert.equal((await old.stop()).code, 0);
    const oldFiles = journalFiles();
    assert.ok(oldFiles.length > 0, 'the old daemon journaled its block');
    for (const [name, uid] of oldFiles) assert.equal(uid, 0, `the old journal's ${name} is root's`);

    runsv = spawn('ip', ['netns', 'exec', ns.name, 'runsv', svc], {
      stdio: 'ignore',
      env: { PATH: `${bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`, LC_ALL: 'C' },
    });
    await waitFor(async () => (await servicePid()) !== null && log().includes('rated started'), {
      timeoutMs: 20_000, intervalMs: 100, what: 'runsv to start rated',
    }).catch(withLog);
  });

  function writeConfig(variant: 'valid' | 'changed' | 'invalid'): void {
    writeFileSync(config, [
      `receivers: { http: { address: 127.0.0.1, port: ${PORT} }, udp: null }`,
      'rules:',
      `  - { name: flood, limit: ${variant === 'changed' ? 30 : 3}, window: 30s, block: 10m${variant === 'invalid' ? ', blok: 1h' : ''} }`,
      // Only SIGHUP can explain a repair within the test.
      'firewall: { checkInterval: 1h }',
      `control: { socket: ${join(dir, 'run', 'rated.sock')} }`,
      `state: { dir: ${stateDir()} }`,
      '',
    ].join('\n'), { mode: 0o644 });
  }

  after(async () => {
    await cleanUp([
      async () => {
        if (svc && existsSync(join(svc, 'supervise'))) await execa('sv', ['-w', '10', 'exit', svc], { reject: false, timeout: 15_000 });
      },
      async () => {
        const child = runsv;
        if (!child || child.exitCode !== null || child.signalCode !== null) return;
        const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await gone;
        clearTimeout(timer);
      },
      () => {
        // Never leave a daemon of ours behind, even if runsv died first.
        for (const pid of daemonPids) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
      },
      () => ns?.delete(),
      () => { if (dir) rmSync(dir, { recursive: true, force: true }); },
    ]);
  });

  test('run execs the daemon as nobody with CAP_NET_ADMIN only; the root CLI sees it up', async () => {
    const pid = await servicePid();
    assert.ok(pid !== null);
    daemonPids.add(pid);
    const r = await cli(['status', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const status = JSON.parse(r.stdout) as { status: string; pid: number; backend: string };
    assert.equal(status.status, 'up');
    assert.equal(status.backend, 'nftables');
    assert.equal(status.pid, pid, 'the pid runsv supervises is the daemon itself (exec, no shell in between)');
    const proc = readFileSync(`/proc/${pid}/status`, 'utf8');
    assert.match(proc, /^Uid:\t65534\t65534\t65534\t65534$/m);
    assert.match(proc, /^CapEff:\t0000000000001000$/m);
    assert.match(proc, /^CapBnd:\t0000000000001000$/m);
    assert.match(proc, /^NoNewPrivs:\t1$/m);
    const run = statSync(join(dir, 'run'));
    assert.equal(run.uid, NOBODY);
    assert.equal(run.mode & 0o777, 0o750);
  });

  test('it took over the root-owned state directory and restored the old block', async () => {
    const files = journalFiles();
    assert.ok(files.length > 0);
    for (const [name, uid] of files) assert.equal(uid, NOBODY, `${name} now belongs to the service user`);
    assert.ok(await inSet(OLD_BLOCK), `${OLD_BLOCK} is in the set`);
    const list = await cli(['list', '--json']);
    assert.ok((JSON.parse(list.stdout) as Array<{ ip: string }>).some((b) => b.ip === OLD_BLOCK), list.stdout);
  });

  test('an offender reported over HTTP is blocked', async () => {
    const space = ns;
    assert.ok(space);
    for (let i = 0; i < 4; i++) {
      const r: CommandResult = await space.run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', `X-IP: ${OFFENDER}`, `http://127.0.0.1:${PORT}/`]);
      assert.equal(r.stdout, '204');
    }
    await waitFor(() => inSet(OFFENDER), { timeoutMs: 5000, intervalMs: 100, what: `${OFFENDER} in set v4` }).catch(withLog);
  });

  test('svlogd writes the log with a UTC timestamp on every line', () => {
    const lines = log().trim().split('\n');
    assert.ok(lines.length >= 2);
    for (const line of lines) assert.match(line, STAMP, `timestamped: ${line}`);
    assert.ok(lines.some((l) => l.includes('"msg":"rated started')));
    assert.ok(lines.some((l) => l.includes('"msg":"blocked"') && l.includes(OFFENDER)), 'the block is logged');
  });

  test('sv hup repairs a deleted table at once, and says that it does not apply a changed config', async () => {
    assert.ok(ns);
    await ns.run('nft', ['delete', 'table', 'inet', 'rated']);
    assert.equal(await inSet(OFFENDER), false);
    writeConfig('changed');
    const r = await sv('hup');
    assert.equal(r.exitCode, 0, r.stderr);
    await waitFor(async () => (await inSet(OFFENDER)) && (await inSet(OLD_BLOCK)), {
      timeoutMs: 5000, intervalMs: 100, what: 'our table and both blocks back after sv hup',
    }).catch(withLog);
    await waitFor(() => log().includes('a reload does not apply it, a restart does'), { timeoutMs: 5000, what: 'the notice about the changed config' }).catch(withLog);
    writeConfig('valid');
  });

  test('sv down stops it cleanly and the blocks stay; root\'s CLI still works and keeps the journal readable', async () => {
    const down = await sv('-w', '10', 'down');
    assert.equal(down.exitCode, 0, `${down.stdout}${down.stderr}`);
    await waitFor(() => log().includes('"msg":"rated stopped"'), { timeoutMs: 5000, what: 'rated stopped in the log' }).catch(withLog);
    assert.equal(await servicePid(), null);
    assert.ok(await inSet(OFFENDER), 'the block outlives the stop');

    // With the daemon down the CLI changes the kernel and the journal itself.
    const unblock = await cli(['unblock', OLD_BLOCK]);
    assert.equal(unblock.code, 0, unblock.stderr);
    assert.ok(journalFiles().some(([name]) => name === 'blocks.json'), 'the CLI wrote a snapshot');
    for (const [name, uid] of journalFiles()) assert.equal(uid, NOBODY, `root's write left ${name} to the service user`);

    const up = await sv('up');
    assert.equal(up.exitCode, 0);
    await waitFor(async () => (await cli(['status', '--json'])).code === 0, { timeoutMs: 15_000, intervalMs: 200, what: 'rated up again' }).catch(withLog);
    const pid = await servicePid();
    if (pid !== null) daemonPids.add(pid);
    assert.ok(await inSet(OFFENDER), 'the block is still there after the restart');
    assert.equal(await inSet(OLD_BLOCK), false, 'what root lifted while it was down stays lifted');
  });

  test('a configuration error stops the service instead of restarting it', async () => {
    writeConfig('invalid');
    const restart = await sv('-w', '10', 'restart');
    assert.ok(restart.exitCode !== null);
    await waitFor(() => log().includes('the service stays down'), { timeoutMs: 10_000, what: 'finish to keep the service down' }).catch(withLog);
    assert.match(log(), /rated: rules\[0\]\.blok: /, 'the reason is in the log');
    // runsv would restart a failed run after one second: watch for three.
    const t0 = Date.now();
    while (Date.now() - t0 < 3000) {
      assert.equal(await servicePid(), null, `restarted:\n${(await sv('status')).stdout}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    assert.equal(log().split('rules[0].blok').length - 1, 1, 'it ran once');
    assert.ok(await inSet(OFFENDER), 'the blocks stay in the kernel meanwhile');

    writeConfig('valid');
    const up = await sv('up');
    assert.equal(up.exitCode, 0);
    await waitFor(async () => (await cli(['status', '--json'])).code === 0, { timeoutMs: 15_000, intervalMs: 200, what: 'rated up after the fix' }).catch(withLog);
    const pid = await servicePid();
    if (pid !== null) daemonPids.add(pid);
  });
});
