// The service files as shipped: the systemd unit's exposure score and
// verification, and the package an operator installs (npm pack, then a
// global install into an empty prefix) with its CLI working from there.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { BIN, ROOT } from '../helpers/rated.js';

const UNIT = join(ROOT, 'systemd', 'rated.service');
const DROP_IN = join(ROOT, 'systemd', 'cap-net-raw.conf');
/** The bound the project promises for `systemd-analyze security` (lower is better; 10 is unsafe). */
const MAX_EXPOSURE = 2.0;

/** `systemd-analyze security --offline=yes FILE`: the overall score and the settings it counts against us. */
async function exposure(file: string): Promise<{ score: number; exitCode: number; against: string[]; text: string }> {
  const r = await execa('systemd-analyze', ['security', '--offline=yes', `--threshold=${Math.round(MAX_EXPOSURE * 10)}`, file], {
    reject: false, env: { SYSTEMD_COLORS: '0', LC_ALL: 'C.UTF-8' },
  });
  const text = `${r.stdout}\n${r.stderr}`;
  const m = /Overall exposure level for \S+: (\d+(?:\.\d+)?) /.exec(text);
  assert.ok(m, `no overall exposure level in:\n${text}`);
  const against = text.split('\n').filter((l) => l.startsWith('✗')).map((l) => l.slice(1).trim().split(/\s+/)[0] ?? '');
  return { score: Number(m[1]), exitCode: r.exitCode ?? -1, against, text };
}

/** `systemd-analyze verify` on a copy of the unit whose `rated` commands point at `bin`. */
async function verifyWith(dir: string, bin: string, extra = ''): Promise<{ exitCode: number; output: string }> {
  const text = readFileSync(UNIT, 'utf8').replace(/^(Exec\w+=[-+!@:]*)rated /gm, `$1${bin} `) + extra;
  const file = join(dir, 'rated.service');
  writeFileSync(file, text);
  const r = await execa('systemd-analyze', ['verify', '--man=no', file], { reject: false, env: { SYSTEMD_COLORS: '0' } });
  return { exitCode: r.exitCode ?? -1, output: `${r.stdout}${r.stderr}`.trim() };
}

describe('systemd unit', { skip: prereqsMet(['systemd-analyze'], false) ? false : 'needs systemd-analyze' }, () => {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'rated-unit-'));
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test(`exposure score of systemd/rated.service is ${MAX_EXPOSURE.toFixed(1)} or lower`, async (t) => {
    const r = await exposure(UNIT);
    t.diagnostic(`systemd-analyze security: ${r.score} (against: ${r.against.join(', ')})`);
    assert.ok(r.score <= MAX_EXPOSURE, `exposure ${r.score} > ${MAX_EXPOSURE}:\n${r.text}`);
    assert.equal(r.exitCode, 0, `--threshold=${MAX_EXPOSURE * 10} passes`);
    // What a firewall daemon cannot do without, and nothing from the root-only list.
    for (const setting of ['User=/DynamicUser=', 'NoNewPrivileges=', 'ProtectSystem=', 'SystemCallFilter=~@privileged', 'CapabilityBoundingSet=~CAP_SYS_ADMIN']) {
      assert.ok(!r.against.includes(setting), `${setting} counts against the unit:\n${r.text}`);
    }
  });

  test('with the CAP_NET_RAW drop-in (ipset, iptables-legacy) the score stays within the bound', async () => {
    const file = join(dir, 'with-net-raw.service');
    // A section may appear twice in a unit file; systemd merges it like a drop-in.
    writeFileSync(file, readFileSync(UNIT, 'utf8') + readFileSync(DROP_IN, 'utf8'));
    const r = await exposure(file);
    assert.ok(r.score <= MAX_EXPOSURE, `exposure ${r.score} > ${MAX_EXPOSURE}:\n${r.text}`);
    assert.ok(r.against.includes('CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)'), 'the drop-in does add CAP_NET_RAW');
  });

  test('systemd-analyze verify finds no error once `rated` is installed', async () => {
    const r = await verifyWith(dir, BIN);
    assert.equal(r.output, '', `verify complained:\n${r.output}`);
    assert.equal(r.exitCode, 0);
    const withDropIn = await verifyWith(dir, BIN, readFileSync(DROP_IN, 'utf8'));
    assert.equal(withDropIn.output, '', `verify complained about the drop-in:\n${withDropIn.output}`);
  });

  test('as shipped, verify complains at most that `rated` is not installed yet', async () => {
    const r = await execa('systemd-analyze', ['verify', '--man=no', UNIT], { reject: false, env: { SYSTEMD_COLORS: '0' } });
    const lines = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.trim() !== '');
    for (const line of lines) assert.match(line, /Command rated is not executable/, `unexpected: ${line}`);
  });
});

describe('npm pack → global install into an empty prefix', { skip: prereqsMet(['npm'], false) ? false : `needs ${missingPrereqs(['npm'], false).join(', ')}` }, () => {
  let dir = '';
  let prefix = '';
  let files: string[] = [];
  const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  const installed = (): string => join(prefix, 'lib', 'node_modules', 'rated');

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rated-pack-'));
    prefix = join(dir, 'prefix');
    // `npm pack` runs the prepare script (the TypeScript build) first, as a release does.
    const pack = await execa('npm', ['pack', '--json', '--pack-destination', dir], { cwd: ROOT, reject: false, timeout: 300_000 });
    assert.equal(pack.exitCode, 0, `npm pack failed:\n${pack.stderr}`);
    const json = pack.stdout.slice(pack.stdout.indexOf('['));
    const [info] = JSON.parse(json) as Array<{ filename: string; files: Array<{ path: string }> }>;
    assert.ok(info);
    files = info.files.map((f) => f.path);
    const tgz = join(dir, info.filename);
    assert.ok(existsSync(tgz), `${tgz} exists`);
    // The package carries its dependencies: it installs with no registry at all, as on a server under attack.
    const install = await execa('npm', ['install', '--global', '--prefix', prefix, '--offline', '--no-audit', '--no-fund', tgz], {
      cwd: dir, reject: false, timeout: 300_000,
    });
    assert.equal(install.exitCode, 0, `npm install -g failed:\n${install.stderr}`);
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('the package holds the build, the launcher, the example config and both service definitions, not the sources', () => {
    for (const f of ['bin/rated', 'dist/cli/main.js', 'etc/rated.yml', 'systemd/rated.service', 'systemd/cap-net-raw.conf',
      'runit/run', 'runit/finish', 'runit/log/run', 'README.md', 'package.json']) {
      assert.ok(files.includes(f), `${f} is in the package: ${files.filter((x) => !x.startsWith('dist/')).join(', ')}`);
    }
    assert.deepEqual(files.filter((f) => /^(src|test|bench)\//.test(f)), [], 'no sources or tests');
  });

  test('rated --version from the prefix prints the package version', async () => {
    const r = await execa(join(prefix, 'bin', 'rated'), ['--version'], { reject: false, cwd: dir });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout.trim(), version);
  });

  test('rated check-config from the prefix validates the shipped example and names a bad key', async () => {
    const example = join(installed(), 'etc', 'rated.yml');
    const ok = await execa(join(prefix, 'bin', 'rated'), ['check-config', '-c', example], { reject: false, cwd: dir });
    assert.equal(ok.exitCode, 0, ok.stderr);
    assert.match(ok.stdout, /^# configuration OK/);
    const viaEnv = await execa(join(prefix, 'bin', 'rated'), ['check-config', '--quiet'], { reject: false, cwd: dir, env: { RATED_CONFIG: example } });
    assert.equal(viaEnv.exitCode, 0, viaEnv.stderr);
    assert.equal(viaEnv.stdout, '', '--quiet prints nothing for a valid file');
    const bad = join(dir, 'bad.yml');
    writeFileSync(bad, 'firewall:\n  tabel: rated\n');
    const r = await execa(join(prefix, 'bin', 'rated'), ['check-config', '--quiet', '-c', bad], { reject: false, cwd: dir });
    assert.equal(r.exitCode, 2);
    assert.match(r.stderr.trim(), /^rated: firewall\.tabel: /);
  });

  test('the installed runit scripts are executable', () => {
    for (const f of ['runit/run', 'runit/finish', 'runit/log/run', 'bin/rated']) {
      const mode = statSync(join(installed(), f)).mode;
      assert.equal(mode & 0o111, 0o111, `${f} is executable (mode ${(mode & 0o777).toString(8)})`);
    }
  });
});
