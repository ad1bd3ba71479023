// Restarts, crashes and firewall reloads (SPEC §2, §5, §7): the built daemon
// on real nftables in a namespace, an offender in another one behind a veth
// pair, kill -9, SIGTERM, `nft flush ruleset`, a corrupt journal, a full disk,
// a second daemon and the CLI with the daemon down. Every assertion is on what
// an operator or the offender observes: `rated list`, the kernel's set, the
// offender's packets, exit codes, logs and metrics.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { callApi } from '../../src/control/client.js';
import { Journal } from '../../src/state/journal.js';
import { createNamespace, veth, type Namespace } from '../helpers/netns.js';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { MAIN_JS, ratedCli, startRated, type CliResult, type LogLine, type Rated } from '../helpers/rated.js';
import { waitFor } from '../helpers/wait-for.js';
import { cleanUp } from '../helpers/cleanup.js';

const TOOLS = ['ip', 'nft', 'curl', 'nsenter', 'mount'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;

const PORT = 8080;
// Long enough for a kill, a restart and a few CLI calls on a busy machine.
const RULE = { name: 'flood', limit: 3, blockSeconds: 45 };
const SRV = '192.0.2.1';
const BAD = '192.0.2.2';
/** A TCP port nothing listens on: a refused connection proves the packet got in, a timeout that it was dropped. */
const CLOSED_PORT = 9;
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

interface BlockJson { ip: string; rule: string | null; reason: string | null; source: string; since: string | null; expires: string | null; hits: number | null }
interface NftElem { val: unknown; timeout?: number; expires?: number }
/** A block as blocks.json keeps it: times in milliseconds since the epoch. */
interface JournalBlock { ip: string; rule: string | null; reason: string | null; source: string; since: number | null; expires: number | null; hits: number | null }
interface ConfigOptions {
  readonly socket?: string;
  readonly stateDir?: string;
  readonly flushOnExit?: boolean;
  readonly blockSeconds?: number;
}

describe('restarts, crashes and firewall reloads', { skip: SKIP }, () => {
  let srv: Namespace;
  let bad: Namespace;
  let dir = '';
  let socket = '';
  let stateDir = '';
  let config = '';
  let rated: Rated | null = null;
  /** Every daemon started here, stopped in `after` whatever happened. */
  const daemons: Rated[] = [];
  const holders: ChildProcess[] = [];
  const mounts: string[] = [];

  const logs = (d: Rated | null = rated): string => `\n--- rated log ---\n${d?.output(40) ?? '(not running)'}`;

  function writeConfig(name: string, o: ConfigOptions = {}): string {
    const file = join(dir, `${name}.yml`);
    writeFileSync(file, [
      'receivers:',
      `  http: { address: 127.0.0.1, port: ${PORT} }`,
      '  udp: null',
      'rules:',
      `  - { name: ${RULE.name}, limit: ${RULE.limit}, window: 10s, block: ${o.blockSeconds ?? RULE.blockSeconds}s }`,
      'escalation: { factor: 2, max: 1h, memory: 1h }',
      'allow: [127.0.0.0/8, "::1/128"]',
      `firewall: { checkInterval: 1s, flushOnExit: ${o.flushOnExit === true} }`,
      `control: { socket: ${o.socket ?? socket} }`,
      `state: { dir: ${o.stateDir ?? stateDir} }`,
      '',
    ].join('\n'));
    return file;
  }

  async function start(file = config, wrap?: readonly string[]): Promise<Rated> {
    // A test that failed half-way may have left its daemon running.
    if (rated && !rated.hasExited()) await rated.stop();
    const d = await startRated({ namespace: srv, config: file, socket, ...(wrap ? { wrap } : {}) });
    daemons.push(d);
    rated = d;
    return d;
  }

  /** SIGTERM; asserts the SPEC §7 contract: exit 0 within 5 s. */
  async function stopCleanly(d: Rated): Promise<void> {
    const exit = await d.stop();
    assert.equal(exit.killed, false, `it stopped by itself${logs(d)}`);
    assert.equal(exit.code, 0, `exit code 0, got ${JSON.stringify(exit)}${logs(d)}`);
    assert.ok(exit.ms !== null && exit.ms <= 5000, `stopped within 5 s, took ${String(exit.ms)} ms`);
    if (rated === d) rated = null;
  }

  async function killHard(d: Rated): Promise<void> {
    process.kill(d.pid, 'SIGKILL');
    const exit = await d.exited;
    assert.equal(exit.signal, 'SIGKILL');
    if (rated === d) rated = null;
  }

  /** `rated ARGS` with the test's config and socket, whether or not a daemon runs. */
  function cli(args: readonly string[], file = config, wrap?: readonly string[]): Promise<CliResult> {
    return ratedCli(srv, [...args, '-c', file, '--socket', socket], wrap ? { wrap } : {});
  }

  async function list(file = config, wrap?: readonly string[]): Promise<BlockJson[]> {
    const r = await cli(['list', '--json'], file, wrap);
    assert.equal(r.code, 0, `rated list --json: ${r.stderr}${logs()}`);
    return withoutCounters(JSON.parse(r.stdout) as BlockJson[]).sort((a, b) => a.ip.localeCompare(b.ip));
  }

  /** The blocks without what they dropped: live counters, which the offender's traffic moves between two reads. */
  function withoutCounters(blocks: Array<BlockJson & { dropped?: unknown }>): BlockJson[] {
    for (const b of blocks) {
      assert.ok(b.dropped === null || (typeof b.dropped === 'object' && 'packets' in (b.dropped)), `dropped is null or counters: ${JSON.stringify(b)}`);
      delete b.dropped;
    }
    return blocks;
  }

  async function block(ip: string, forTime: string, file = config, wrap?: readonly string[]): Promise<void> {
    const r = await cli(['block', ip, '--for', forTime], file, wrap);
    assert.equal(r.code, 0, `rated block ${ip}: ${r.stderr}${logs()}`);
  }

  /** GET /blocks, the API behind `rated list --json`: quicker to poll than starting the CLI. */
  async function blocksApi(): Promise<BlockJson[]> {
    const res = await callApi(socket, 'GET', '/blocks');
    assert.equal(res.status, 200, res.text);
    return withoutCounters(res.body as BlockJson[]).sort((a, b) => a.ip.localeCompare(b.ip));
  }

  /** POST /blocks, the API behind `rated block`. */
  async function blockApi(ip: string, forTime: string): Promise<void> {
    const res = await callApi(socket, 'POST', '/blocks', { ip, for: forTime });
    assert.ok(res.status === 200 || res.status === 201, `POST /blocks ${ip}: ${res.text}${logs()}`);
  }

  async function setElems(family: 'v4' | 'v6' | 'v4net' | 'v6net', table = 'rated'): Promise<NftElem[]> {
    const r = await srv.exec('nft', ['-j', 'list', 'set', 'inet', table, family]);
    if (r.exitCode !== 0) return [];
    const doc = JSON.parse(r.stdout) as { nftables: Array<{ set?: { elem?: unknown[] } }> };
    const set = doc.nftables.find((i) => i.set)?.set;
    return (set?.elem ?? []).map((e) => (e as { elem?: NftElem }).elem ?? { val: e });
  }

  /** The element's text as rated writes it: an address, or a CIDR for a prefix. */
  function elemText(e: NftElem): string {
    if (typeof e.val === 'string') return e.val;
    const p = (e.val as { prefix?: { addr: string; len: number } }).prefix;
    return p ? `${p.addr}/${p.len}` : JSON.stringify(e.val);
  }

  /** Every element of our four sets, by the block it stands for (IPv6 clients of set v6 as their /64). */
  async function kernel(): Promise<Map<string, NftElem>> {
    const all: Array<[string, NftElem]> = [];
    for (const set of ['v4', 'v6', 'v4net', 'v6net'] as const) {
      for (const e of await setElems(set)) all.push([set === 'v6' ? `${elemText(e)}/64` : elemText(e), e]);
    }
    return new Map(all);
  }

  /** Whether the offender's packets reach the server: `open` (refused by the closed port) or `dropped`. */
  async function offender(): Promise<'open' | 'dropped'> {
    const r = await bad.exec('curl', ['-s', '-o', '/dev/null', '--connect-timeout', '1', `http://${SRV}:${CLOSED_PORT}/`]);
    if (r.exitCode === 7) return 'open';
    if (r.exitCode === 28) return 'dropped';
    throw new Error(`curl exited ${r.exitCode}: ${r.stderr}`);
  }

  /** Waits for a block just decided to reach the kernel (its batch follows the decision). */
  async function droppedSoon(what: string): Promise<void> {
    await waitFor(async () => (await offender()) === 'dropped', { timeoutMs: 5000, what })
      .catch((err: unknown) => { throw new Error(`${(err as Error).message}${logs()}`, { cause: err }); });
  }

  /** Sends `limit + 1` notifications for each address to the HTTP receiver, in one curl process. */
  async function offend(ips: readonly string[]): Promise<void> {
    const args: string[] = [];
    for (const ip of ips) {
      for (let i = 0; i <= RULE.limit; i++) {
        if (args.length > 0) args.push('--next');
        args.push('-s', '-o', '/dev/null', '-w', '%{http_code}\\n', '-H', `X-IP: ${ip}`, `http://127.0.0.1:${PORT}/`);
      }
    }
    const r = await srv.run('curl', args);
    const codes = r.stdout.trim().split('\n');
    assert.deepEqual(codes, Array<string>(ips.length * (RULE.limit + 1)).fill('204'));
  }

  async function blockedNow(ip: string): Promise<BlockJson> {
    return waitFor(async () => (await blocksApi()).find((b) => b.ip === ip), { timeoutMs: 5000, what: `${ip} in rated list` })
      .catch((err: unknown) => { throw new Error(`${(err as Error).message}${logs()}`, { cause: err }); });
  }

  /** What the journal holds: its snapshot and the logs after it, read as rated reads them at start (and never moved aside). */
  function readJournal(dir: string): { blocks: JournalBlock[]; offences: Array<[string, unknown]>; rejected: readonly string[] } {
    const loaded = new Journal(dir).load(false);
    return {
      blocks: loaded.blocks.map((b) => ({ ip: b.net.text, rule: b.rule, reason: b.reason, source: b.source, since: b.since, expires: b.expires, hits: b.hits })),
      offences: loaded.offences,
      rejected: loaded.rejected ?? [],
    };
  }

  /** Waits until the journal holds every one of `ips` (it is written a moment after a change). */
  async function journalHolds(dir: string, ips: readonly string[]): Promise<void> {
    await waitFor(() => {
      const held = new Set(readJournal(dir).blocks.map((b) => b.ip));
      return ips.every((ip) => held.has(ip));
    }, { timeoutMs: 5000, what: `the journal to hold ${ips.join(', ')}` });
  }

  async function metric(name: string, labels = ''): Promise<number> {
    const res = await callApi(socket, 'GET', '/metrics');
    const line = res.text.split('\n').find((l) => l.startsWith(`${name}${labels} `) || (labels === '' && l.startsWith(`${name} `)));
    return line === undefined ? 0 : Number(line.split(' ').at(-1));
  }

  const isError = (msg: string) => (l: LogLine): boolean => l.level === 50 && l.msg === msg;
  const lengthMs = (b: BlockJson): number => Date.parse(b.expires ?? '') - Date.parse(b.since ?? '');

  before(async () => {
    assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first (npm run build)`);
    dir = mkdtempSync(join(tmpdir(), 'rated-restart-'));
    socket = join(dir, 'run', 'rated.sock');
    stateDir = join(dir, 'state');
    srv = await createNamespace('rtr-srv');
    bad = await createNamespace('rtr-bad');
    await veth(srv, bad, { a: `${SRV}/24`, b: `${BAD}/24` });
    config = writeConfig('rated');
  });

  after(async () => {
    await cleanUp([
      ...daemons.map((d) => () => d.stop()),
      ...holders.map((h) => async () => {
        if (h.exitCode === null && h.signalCode === null) {
          const gone = new Promise((resolve) => h.once('close', resolve));
          h.kill('SIGKILL');
          await gone;
        }
      }),
      () => {
        const left = readFileSync('/proc/mounts', 'utf8').split('\n').filter((l) => mounts.some((m) => l.includes(m)));
        if (left.length > 0) throw new Error(`a test mount was left behind: ${left.join('; ')}`);
      },
      () => bad?.delete(),
      () => srv?.delete(),
      () => { if (dir) rmSync(dir, { recursive: true, force: true }); },
    ]);
  });

  test('kill -9 with blocks in force: after a restart every block is listed as before, enforced, and lifted on time', async () => {
    const first = await start();
    assert.equal(await offender(), 'open', 'before any block the offender gets through');
    await offend([BAD]);
    await blockedNow(BAD);
    await blockApi('203.0.113.0/24', '1h');
    await blockApi('2001:db8:9::/64', '30m');
    await journalHolds(stateDir, [BAD, '203.0.113.0/24', '2001:db8:9::/64']);
    const before = await list();
    assert.equal(before.length, 3, JSON.stringify(before));
    assert.equal(before.find((b) => b.ip === BAD)?.source, 'rule');
    await droppedSoon('the offender to be dropped');

    await killHard(first);
    assert.ok(existsSync(socket), 'kill -9 leaves the control socket behind');
    assert.equal(await offender(), 'dropped', 'the kernel keeps dropping while rated is dead');

    const second = await start();
    assert.equal(second.started.control, socket, 'the stale socket was replaced');
    assert.deepEqual(await list(), before, 'rule, reason, source, since, expires and hits are as before the crash');
    assert.equal(await offender(), 'dropped', 'still enforced after the restart');
    const elems = await kernel();
    for (const b of before) assert.ok(elems.has(b.ip), `${b.ip} is in the kernel: ${JSON.stringify([...elems.keys()])}`);

    // Lifted on time: not before its expiry, and soon after it.
    const expires = Date.parse(before.find((b) => b.ip === BAD)?.expires ?? '');
    let openedAt = 0;
    await waitFor(async () => {
      const t = Date.now();
      const open = (await offender()) === 'open';
      if (open) openedAt = t;
      return open;
    }, { timeoutMs: expires - Date.now() + 5000, intervalMs: 200, what: 'the offender to get through after the block' });
    assert.ok(openedAt >= expires - 1000, `lifted at ${new Date(openedAt).toISOString()}, its expiry is ${new Date(expires).toISOString()}`);
    await waitFor(async () => !(await blocksApi()).some((b) => b.ip === BAD), { timeoutMs: 3000, what: `${BAD} to leave rated list` });
    assert.equal((await kernel()).has(BAD), false);
  });

  test('restart reconciles: a hand-added element is adopted, a missing one re-added, an expired one dropped', async () => {
    assert.ok(rated);
    await blockApi('198.51.100.77', '6s');
    const shortLived = (await blocksApi()).find((b) => b.ip === '198.51.100.77');
    assert.ok(shortLived);
    await stopCleanly(rated);
    const journal = readJournal(stateDir);
    assert.ok(journal.blocks.some((b) => b.ip === '198.51.100.77'), 'the short block is in the journal when rated stops');
    const manual = journal.blocks.find((b) => b.ip === '203.0.113.0/24');
    assert.ok(manual);

    // While rated is down: someone adds an element by hand, someone deletes one of ours, one block runs out.
    await srv.run('nft', ['add', 'element', 'inet', 'rated', 'v4', '{ 198.51.100.9 timeout 1h }']);
    await srv.run('nft', ['delete', 'element', 'inet', 'rated', 'v4net', '{ 203.0.113.0/24 }']);
    const expiry = Date.parse(shortLived.expires ?? '');
    await waitFor(async () => Date.now() > expiry && !(await kernel()).has('198.51.100.77'), {
      timeoutMs: expiry - Date.now() + 5000, intervalMs: 200, what: 'the short block to run out in the kernel',
    });
    const handAdded = (await kernel()).get('198.51.100.9');
    assert.ok(typeof handAdded?.expires === 'number');
    const handExpiry = Date.now() + handAdded.expires * 1000;

    const remainingAtStart = ((manual.expires ?? 0) - Date.now()) / 1000;
    const d = await start();
    assert.deepEqual(d.started.journal, { blocks: 2, expired: 1, refused: 0, invalid: 0 }, JSON.stringify(d.started));
    const blocks = await list();
    const adopted = blocks.find((b) => b.ip === '198.51.100.9');
    assert.ok(adopted, `the hand-added element is listed: ${JSON.stringify(blocks)}`);
    assert.equal(adopted.source, 'reconciled');
    assert.deepEqual([adopted.rule, adopted.since, adopted.hits], [null, null, null]);
    assert.match(adopted.expires ?? '', ISO);
    assert.ok(Math.abs(Date.parse(adopted.expires ?? '') - handExpiry) < 2500, `with its kernel expiry: ${adopted.expires} vs ${new Date(handExpiry).toISOString()}`);

    assert.deepEqual(blocks.find((b) => b.ip === '203.0.113.0/24'), {
      ip: manual.ip, rule: manual.rule, reason: manual.reason, source: manual.source, hits: manual.hits,
      since: new Date(manual.since ?? 0).toISOString(), expires: new Date(manual.expires ?? 0).toISOString(),
    }, 'the deleted element is listed as it was');
    const readded = (await kernel()).get('203.0.113.0/24');
    assert.ok(readded, 'and put back into the kernel');
    const remaining = ((manual.expires ?? 0) - Date.now()) / 1000;
    assert.ok(typeof readded.timeout === 'number' && readded.timeout <= Math.ceil(remainingAtStart) + 1 && readded.timeout >= remaining - 1,
      `with the time it had left at the start (${remainingAtStart.toFixed(0)} s), not a fresh hour: timeout ${String(readded.timeout)}`);
    assert.ok(readded.timeout < 3600 - 5, 'a fresh hour would be 3600 s');

    assert.ok(!blocks.some((b) => b.ip === '198.51.100.77'), 'the expired entry is not listed');
    assert.equal((await kernel()).has('198.51.100.77'), false, 'nor put back');
  });

  test('escalation survives restarts: a repeat offender gets a block factor× longer', async () => {
    assert.ok(rated);
    assert.equal(await offender(), 'open');
    await offend([BAD]);
    const repeat = await blockedNow(BAD);
    assert.ok(Math.abs(lengthMs(repeat) - 2 * RULE.blockSeconds * 1000) < 1000,
      `the second offence, remembered across a kill -9 and a restart, lasts 2 × ${RULE.blockSeconds}s: ${lengthMs(repeat)} ms`);
    await droppedSoon('the repeat offender to be dropped');
    // Keep the offender out while the next tests restart rated again and again.
    await blockApi(BAD, '1h');
  });

  test('nft flush ruleset while rated runs: table and blocks are back within checkInterval, drift is counted and logged', async () => {
    assert.ok(rated);
    const d = rated;
    const before = await blocksApi();
    assert.ok(before.some((b) => b.ip === BAD));
    const metricBefore = await metric('rated_drift_repairs_total');

    await srv.run('nft', ['flush', 'ruleset']);
    assert.equal((await srv.exec('nft', ['list', 'table', 'inet', 'rated'])).exitCode, 1, 'our table is gone');

    const back = await waitFor(async () => {
      const k = await kernel();
      return before.every((b) => k.has(b.ip)) ? k : null;
    }, { timeoutMs: 4000, intervalMs: 100, what: 'every block back in the kernel' }).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}${logs()}`, { cause: err });
    });
    const offenderBlock = before.find((b) => b.ip === BAD);
    const remaining = (Date.parse(offenderBlock?.expires ?? '') - Date.now()) / 1000;
    const restored = back.get(BAD);
    assert.ok(typeof restored?.timeout === 'number' && restored.timeout <= Math.ceil(remaining) + 2,
      `restored with its remaining time (${remaining.toFixed(1)} s): ${JSON.stringify(restored)}`);
    assert.equal(await offender(), 'dropped', 'the offender is dropped again');
    assert.deepEqual(await blocksApi(), before, 'rated list did not change');

    await d.waitForLine((l) => l.level === 40 && l.msg === 'our firewall table was changed by something else; restored it');
    assert.ok(await metric('rated_drift_repairs_total') > metricBefore, 'drift counted in the metrics');
    const status = JSON.parse((await cli(['status', '--json'])).stdout) as { firewall: { driftRepairs: number } };
    assert.ok(status.firewall.driftRepairs >= 1, JSON.stringify(status.firewall));

    // One element removed by someone else is put back too.
    await srv.run('nft', ['delete', 'element', 'inet', 'rated', 'v4net', '{ 203.0.113.0/24 }']);
    await waitFor(async () => (await kernel()).has('203.0.113.0/24'), { timeoutMs: 4000, intervalMs: 100, what: '203.0.113.0/24 back in the kernel' });
    await d.waitForLine((l) => l.level === 40 && l.msg === 'our firewall set differed from our blocks; repaired it');
  });

  test('a second rated on the same state dir or socket exits 1 and leaves the first one alone', async () => {
    assert.ok(rated);
    const first = rated;
    const blocksBefore = await blocksApi();
    const kernelBefore = [...(await kernel()).keys()].sort();

    const same = await ratedCli(srv, ['run', '-c', config, '--socket', socket], { timeoutMs: 15_000 });
    assert.equal(same.code, 1, `exit 1: ${same.stdout}${same.stderr}`);
    const lines = same.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line on stderr: ${same.stderr}`);
    assert.match(lines[0] ?? '', /^rated: another rated is already running on /);

    // The same state dir behind another socket: the lock refuses it.
    const otherSocket = join(dir, 'run', 'other.sock');
    const sameState = await ratedCli(srv, ['run', '-c', writeConfig('other-socket', { socket: otherSocket }), '--socket', otherSocket], { timeoutMs: 15_000 });
    assert.equal(sameState.code, 1, `exit 1: ${sameState.stdout}${sameState.stderr}`);
    assert.match(sameState.stderr.trim(), new RegExp(`^rated: another rated \\(pid ${first.pid}\\) already uses ${stateDir}; stop it first`));

    // Another state dir on the same socket, and with flushOnExit: it must not touch the first one's blocks.
    const other = writeConfig('other-state', { stateDir: join(dir, 'other-state'), flushOnExit: true });
    const sameSocket = await ratedCli(srv, ['run', '-c', other, '--socket', socket], { timeoutMs: 15_000 });
    assert.equal(sameSocket.code, 1, `exit 1: ${sameSocket.stdout}${sameSocket.stderr}`);
    assert.match(sameSocket.stderr.trim(), /^rated: another rated is already running on /);

    assert.equal(first.hasExited(), false, 'the first daemon still runs');
    assert.deepEqual(await blocksApi(), blocksBefore, 'and still answers with the same blocks');
    assert.deepEqual([...(await kernel()).keys()].sort(), kernelBefore, 'the kernel holds the same elements');
    assert.equal(await offender(), 'dropped');
  });

  test('SIGTERM exits 0 within 5 s and leaves the blocks in the kernel', async () => {
    assert.ok(rated);
    const before = await blocksApi();
    await stopCleanly(rated);
    const k = await kernel();
    for (const b of before) assert.ok(k.has(b.ip), `${b.ip} stays in the kernel`);
    assert.equal(await offender(), 'dropped', 'a stop does not open the gate');
  });

  test('a corrupt, unknown-version, oversized or linked journal is moved aside, never overwritten; rated starts from the kernel', async () => {
    const path = join(stateDir, 'blocks.json');
    const target = join(dir, 'not-a-journal');
    const targetText = 'root:x:0:0:root:/root:/bin/bash\n';
    const cases: Array<[string, () => void, (file: string) => void]> = [
      ['garbage', () => writeFileSync(path, '{"version":1,"blocks":[{"ip":"192.0.2.'),
        (file) => assert.equal(readFileSync(file, 'utf8'), '{"version":1,"blocks":[{"ip":"192.0.2.', 'the bad journal is kept for inspection')],
      ['unknown version', () => writeFileSync(path, JSON.stringify({ version: 99, blocks: [] })),
        (file) => assert.equal((JSON.parse(readFileSync(file, 'utf8')) as { version: number }).version, 99, 'the bad journal is kept for inspection')],
      // Larger than a string Node can build: refused by its size, not read.
      ['600 MB', () => {
        writeFileSync(path, '');
        truncateSync(path, 600 * 1024 * 1024);
      }, (file) => assert.equal(statSync(file).size, 600 * 1024 * 1024, 'the oversized journal is kept whole')],
      ['a symbolic link', () => {
        writeFileSync(target, targetText);
        symlinkSync(target, path);
      }, (file) => {
        assert.ok(lstatSync(file).isSymbolicLink(), 'the link itself is moved aside');
        assert.equal(readFileSync(target, 'utf8'), targetText, 'the file it points to is neither read as a journal nor written');
      }],
    ];
    const movedAside: string[] = [];
    for (const [what, make, check] of cases) {
      const inKernel = [...(await kernel()).keys()].sort();
      assert.ok(inKernel.includes(BAD), `${what}: the offender is in the kernel`);
      rmSync(path, { force: true });
      make();
      const d = await start();
      const error = await d.waitForLine(isError('journal unreadable; moved it aside and starting from the kernel state'));
      assert.match(String(error.file), /blocks\.json\.bad-/, what);
      assert.ok(!movedAside.includes(String(error.file)), `${what}: an earlier bad journal is not overwritten`);
      movedAside.push(String(error.file));
      check(String(error.file));
      const blocks = await blocksApi();
      assert.deepEqual(blocks.map((b) => b.ip).sort(), inKernel, `${what}: every kernel element is listed`);
      for (const b of blocks) assert.equal(b.source, 'reconciled', `${what}: ${b.ip}`);
      assert.equal(await offender(), 'dropped', `${what}: still protecting`);
      await journalHolds(stateDir, inKernel);
      await waitFor(() => existsSync(path), { timeoutMs: 5000, what: `${what}: a new snapshot` });
      assert.equal((JSON.parse(readFileSync(path, 'utf8')) as { version: number }).version, 1, `${what}: a good journal is written again`);
      assert.ok(!lstatSync(path).isSymbolicLink(), `${what}: the new journal is a file of its own`);
      await stopCleanly(d);
    }
    for (const file of movedAside) assert.ok(existsSync(file) || lstatSync(file).isSymbolicLink(), `${file} is still there`);
    for (const file of movedAside) rmSync(file, { force: true });
  });

  test('journal entries pass the same checks as any input: impossible ones are skipped and reported, the rest is kept', async () => {
    const path = join(stateDir, 'blocks.json');
    const now = Date.now();
    const tenYears = now + 3653 * 86_400_000;
    const entry = (ip: string, expires: number, source = 'manual'): JournalBlock =>
      ({ ip, rule: null, reason: 'planted', source, since: now, expires, hits: null });
    const good = entry('198.51.100.55', now + 600_000);
    writeFileSync(path, JSON.stringify({ version: 1, savedAt: new Date(now).toISOString(), offences: [], blocks: [
      entry('128.0.0.0/1', tenYears), entry('2000::/3', tenYears), entry('198.51.100.56', 1e17),
      entry('198.51.100.57', tenYears), entry('fe80::/64', now + 600_000), entry('0.0.0.0/8', now + 600_000),
      entry('198.51.100.58', now + 30 * 86_400_000, 'rule'), good,
    ] }));
    const d = await start();
    assert.equal((d.started.journal as { invalid?: number }).invalid, 7, JSON.stringify(d.started));
    const warning = await d.waitForLine((l) => l.msg === 'journal entries that no input could have made were skipped; the rest is kept');
    assert.equal(warning.skipped, 7);
    const res = await callApi(socket, 'GET', '/blocks');
    assert.equal(res.status, 200, `GET /blocks answers: ${res.text.slice(0, 200)}`);
    const listed = (res.body as BlockJson[]).map((b) => b.ip);
    assert.ok(listed.includes(good.ip), `the good entry is kept: ${listed.join(' ')}`);
    for (const ip of ['128.0.0.0/1', '2000::/3', '198.51.100.56', '198.51.100.57', 'fe80::/64', '0.0.0.0/8', '198.51.100.58']) {
      assert.ok(!listed.includes(ip), `${ip} is not adopted`);
    }
    const cli = await d.cli(['list', '--json']);
    assert.equal(cli.code, 0, cli.stderr);
    const k = await kernel();
    assert.ok(k.has(good.ip), 'the good entry is in the kernel');
    for (const ip of ['128.0.0.0/1', '198.51.100.56', '198.51.100.57', '0.0.0.0/8']) assert.ok(!k.has(ip), `${ip} never reached the kernel`);
    assert.equal((await d.cli(['unblock', good.ip])).code, 0);
    await stopCleanly(d);
  });

  test('with the daemon down, list, unblock and flush work on our sets only; the next start forgets what was lifted', async () => {
    // The offender's first offence, in the journal when rated stops.
    const up = await start();
    // Lift what the tests before left, so the next offence is a first one.
    const lifted = await callApi(socket, 'DELETE', `/blocks/${BAD}`);
    assert.ok(lifted.status === 200 || lifted.status === 404, lifted.text);
    await offend([BAD]);
    const first = await blockedNow(BAD);
    assert.ok(Math.abs(lengthMs(first) - RULE.blockSeconds * 1000) < 1000, `a first offence: ${lengthMs(first)} ms`);
    await droppedSoon('the offender to be dropped');
    await stopCleanly(up);
    assert.ok(readJournal(stateDir).offences.some(([key]) => key === BAD), 'the offence is journaled');

    // A firewall that is not ours, in the same namespace.
    const otherFile = join(dir, 'other.nft');
    writeFileSync(otherFile, [
      'table inet other {',
      '  set blocked { type ipv4_addr; flags interval; elements = { 192.0.2.2, 198.51.100.0/24 } }',
      '  chain input { type filter hook input priority 10; policy accept; ip saddr @blocked counter accept; }',
      '}',
      '',
    ].join('\n'));
    await srv.run('nft', ['-f', otherFile]);
    // Stateless (-s): the counter of its accept rule counts the offender's packets.
    const foreign = async (): Promise<string> => (await srv.run('nft', ['-s', '-j', 'list', 'table', 'inet', 'other'])).stdout;
    const foreignBefore = await foreign();

    const k = await kernel();
    const listed = await list();
    assert.deepEqual(listed.map((b) => b.ip).sort(), [...k.keys()].sort(), 'list reads the kernel');
    for (const b of listed) {
      assert.deepEqual([b.rule, b.since, b.hits], [null, null, null], `${b.ip}: unknown without the daemon`);
      assert.match(b.expires ?? '', ISO);
    }

    // explain reads the journal and the kernel: the block with its rule, and no counts.
    const explained = await cli(['explain', BAD, '--json']);
    assert.equal(explained.code, 0, explained.stderr);
    const why = JSON.parse(explained.stdout) as { blocked: { ip: string; rule: string | null } | null; rules: unknown };
    assert.equal(why.blocked?.ip, BAD);
    assert.equal(why.blocked.rule, RULE.name, 'the journal says which rule');
    assert.equal(why.rules, null, 'no counts without the daemon');
    assert.match((await cli(['explain', BAD])).stdout, /^counts: {3}not known: the daemon is down/m);

    const unblocked = await cli(['unblock', BAD]);
    assert.equal(unblocked.code, 0, unblocked.stderr);
    assert.equal(unblocked.stdout.trim(), `unblocked ${BAD}`);
    assert.equal((await kernel()).has(BAD), false);
    assert.equal(await offender(), 'open', 'the offender gets through');
    const notBlocked = await cli(['unblock', '198.18.0.1']);
    assert.equal(notBlocked.code, 1, notBlocked.stderr);
    assert.match(notBlocked.stderr, /is not blocked/);

    const flushed = await cli(['flush', '--yes']);
    assert.equal(flushed.code, 0, flushed.stderr);
    assert.match(flushed.stdout, /^lifted \d+ blocks?\n$/);
    assert.deepEqual([...(await kernel()).keys()], [], 'our sets are empty');
    assert.equal((await srv.exec('nft', ['list', 'table', 'inet', 'rated'])).exitCode, 0, 'our table stays');
    assert.equal(await foreign(), foreignBefore, 'inet other is exactly as it was');

    const d = await start();
    assert.deepEqual(await list(), [], 'nothing lifted comes back from the journal');
    assert.deepEqual([...(await kernel()).keys()], []);
    // unblock also forgot the client's repeat offences, as it does with the daemon up.
    await offend([BAD]);
    const fresh = await blockedNow(BAD);
    assert.ok(Math.abs(lengthMs(fresh) - RULE.blockSeconds * 1000) < 1000, `a first offence again, not a repeat: ${lengthMs(fresh)} ms`);
    assert.equal(await foreign(), foreignBefore, 'inet other is still untouched');
    await stopCleanly(d);
    await srv.run('nft', ['delete', 'table', 'inet', 'other']);
  });

  test('with flushOnExit, SIGTERM lifts every block; the kernel holds none of ours', async () => {
    const file = writeConfig('flush-on-exit', { flushOnExit: true });
    const d = await start(file);
    await blockApi(BAD, '1h');
    await block('203.0.113.0/24', '1h', file);
    assert.ok((await kernel()).has('203.0.113.0/24'), 'blocks in the kernel');
    assert.equal(await offender(), 'dropped');
    await stopCleanly(d);
    assert.ok(d.lines.some((l) => l.msg === 'flushed every block on exit (firewall.flushOnExit)'));
    assert.deepEqual([...(await kernel()).keys()], [], 'our sets are empty');
    assert.equal(await offender(), 'open');
  });

  test('a full disk: rated keeps blocking, says so once, loses nothing already journaled, and writes again when space returns', async () => {
    // The state dir is a tiny tmpfs in a mount namespace of its own, held by a
    // process of ours: it vanishes with that process and never shows on the host.
    const mnt = join(dir, 'tmpfs-state');
    mkdirSync(mnt);
    mounts.push(mnt);
    const holder = spawn('ip', ['netns', 'exec', srv.name, 'sh', '-c',
      'mount -t tmpfs -o size=128k,mode=0750 rated-test "$1" && echo mounted && exec sleep 600', 'sh', mnt], { stdio: ['ignore', 'pipe', 'pipe'] });
    holders.push(holder);
    let holderErr = '';
    holder.stderr?.on('data', (c: Buffer) => { holderErr += c.toString(); });
    const mounted = await new Promise<string>((resolve) => {
      if (holder.stdout) createInterface({ input: holder.stdout }).once('line', resolve);
      holder.once('close', () => resolve('exited'));
      setTimeout(() => resolve('timed out'), 5000).unref();
    });
    assert.equal(mounted, 'mounted', `mounting the tmpfs: ${holderErr}`);
    const root = `/proc/${holder.pid}/root${mnt}`;
    const wrap = ['nsenter', '-t', String(holder.pid), '-m', '--'];
    const file = writeConfig('full-disk', { stateDir: mnt, blockSeconds: 3600 });
    // A clean start: no blocks left by the tests before (the table may not exist).
    await srv.exec('nft', ['delete', 'table', 'inet', 'rated']);

    let d = await start(file, wrap);
    // Thirty offenders, journaled before the disk fills.
    const early = Array.from({ length: 30 }, (_, i) => `198.18.0.${i + 1}`);
    await offend(early);
    await journalHolds(root, early);
    const journaled = readJournal(root);

    // Fill the file system to the last byte.
    try {
      writeFileSync(join(root, 'filler'), Buffer.alloc(256 * 1024));
      assert.fail('the tmpfs should have filled up');
    } catch (err) {
      assert.equal((err as NodeJS.ErrnoException).code, 'ENOSPC');
    }
    // Whatever room the log's last page had left: 40 blocks' lines are more than a page.
    const late = Array.from({ length: 40 }, (_, i) => `203.0.113.${i + 100}`);
    for (const ip of late) await blockApi(ip, '1h');
    await offend([BAD]);
    await blockedNow(BAD);
    await droppedSoon('blocking to go on with a full disk');
    await d.waitForLine(isError('cannot write the journal; blocks stay in memory and in the kernel'));
    await blockApi('203.0.113.50', '1h');
    assert.ok((await kernel()).has('203.0.113.50'));
    await waitFor(async () => (await metric('rated_errors_total', '{component="journal"}')) >= 2, {
      timeoutMs: 8000, what: 'a second failed write to be counted',
    });
    assert.equal(d.lines.filter(isError('cannot write the journal; blocks stay in memory and in the kernel')).length, 1, 'logged once');
    // What was written before the disk filled reads back whole; a line cut short by ENOSPC is not read.
    const onDisk = readJournal(root);
    assert.deepEqual(onDisk.rejected, [], 'no damaged line');
    for (const b of journaled.blocks) assert.deepEqual(onDisk.blocks.find((x) => x.ip === b.ip), b, `${b.ip} is intact`);

    // A crash while the disk is full loses nothing: the journal and the kernel together hold every block.
    await killHard(d);
    d = await start(file, wrap);
    const blocks = await list(file, wrap);
    for (const ip of early) assert.equal(blocks.find((b) => b.ip === ip)?.rule, RULE.name, `${ip} keeps its rule`);
    for (const ip of [BAD, '203.0.113.50', ...late]) assert.ok(blocks.some((b) => b.ip === ip), `${ip} is still blocked`);
    assert.equal(await offender(), 'dropped');

    // The blocks adopted from the kernel meet the full disk again; once there is room the journal is written again.
    await d.waitForLine(isError('cannot write the journal; blocks stay in memory and in the kernel'), { timeoutMs: 8000 });
    rmSync(join(root, 'filler'));
    await d.waitForLine((l) => l.msg === 'journal written again', { timeoutMs: 8000 });
    await journalHolds(root, [...early, ...late, BAD, '203.0.113.50']);
    await stopCleanly(d);
    await srv.run('nft', ['delete', 'table', 'inet', 'rated']);
  });
});
