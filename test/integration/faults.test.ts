// Faults of HARDENING.md §5 that can be produced here, against the built
// daemon on nftables in a namespace: nft missing at start and vanishing at
// run time (F1), hanging with children of its own (F20), one poison element
// in a batch (F2), the delete of an element already gone (F3), and a set
// that is full (F4). A stand-in `nft` first on the daemon's PATH produces the
// tool faults and otherwise runs the real nft. Restarts with blocks, ruleset
// flushes, a corrupt journal, a full disk, stale sockets and second
// instances are in the restart tests; kill -9 in a 100,000-element batch and
// a ban storm in faults-storm.test.ts; a clock step in
// test/unit/enforce/hostile-clock.test.ts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { callApi } from '../../src/control/client.js';
import { kernelSets, parseMetrics, setEntries } from '../helpers/kernel-set.js';
import { createNamespace, type Namespace } from '../helpers/netns.js';
import { exchange, forwardInto, type Forward } from '../helpers/ns-forward.js';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { MAIN_JS, ratedCli, startRated, type Rated } from '../helpers/rated.js';
import { waitFor } from '../helpers/wait-for.js';

const TOOLS = ['ip', 'nft'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;
const PORT = 8080;
const REAL_NFT = '/usr/sbin/nft';

/**
 * A stand-in for nft, steered by the file `mode` next to it: `pass` runs the
 * real nft; `hang` starts a child and sleeps (both far longer than the
 * daemon's timeout); `poison:<addr>` refuses any batch that names <addr>,
 * as the kernel refuses a bad element. Each call is logged in `calls`,
 * hanging PIDs in `children`, refused batches in `poisoned`.
 */
function nftStandIn(dir: string): string {
  return `#!/bin/sh
here=\${0%/*}
mode=pass
[ -f "$here/mode" ] && read -r mode < "$here/mode"
echo "$$ $mode $*" >> "$here/calls"
case "$mode" in
  hang)
    /bin/sleep 300 &
    echo $! >> "$here/children"
    echo $$ >> "$here/children"
    /bin/sleep 300
    exit 0
    ;;
  poison:*)
    addr=\${mode#poison:}
    tmp=$(/bin/mktemp "$here/batch.XXXXXX")
    /bin/cat > "$tmp"
    if /bin/grep -qF "\\"$addr\\"" "$tmp"; then
      /bin/rm -f "$tmp"
      echo "$$" >> "$here/poisoned"
      echo "Error: Could not process rule: Invalid argument" >&2
      exit 1
    fi
    ${REAL_NFT} "$@" < "$tmp"
    rc=$?
    /bin/rm -f "$tmp"
    exit $rc
    ;;
  *)
    exec ${REAL_NFT} "$@"
    ;;
esac
# ${dir}
`;
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // A zombie still answers; it is gone for every purpose here.
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

interface Status {
  status: string;
  activeBlocks: number;
  firewall: { refused: number };
  lastErrors: Array<{ at: string; error: string }>;
}

describe('faults: nft missing, vanishing and hanging; a poison element; an element already gone', { skip: SKIP }, () => {
  let srv: Namespace | null = null;
  let dir = '';
  let bin = '';
  let config = '';
  let socket = '';
  let rated: Rated | null = null;
  let fwd: Forward | null = null;
  let injected = 0;

  const logs = (): string => `\n--- rated log ---\n${rated?.output(30) ?? '(not started)'}`;
  const setMode = (mode: string): void => writeFileSync(join(bin, 'mode'), `${mode}\n`);
  const status = async (): Promise<Status> => (await callApi(socket, 'GET', '/status')).body as Status;
  const listed = async (): Promise<string[]> => ((await callApi(socket, 'GET', '/blocks')).body as Array<{ ip: string }>).map((b) => b.ip).sort();
  const v4 = async (): Promise<string[]> => (await kernelSets(srv as Namespace)).v4;
  const notify = async (ip: string, times: number): Promise<number[]> =>
    (await exchange(fwd as Forward, Buffer.concat(Array.from({ length: times }, () => Buffer.from(`GET / HTTP/1.1\r\nHost: rated\r\nX-IP: ${ip}\r\n\r\n`))), { responses: times })).statuses;

  before(async () => {
    assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first (npm run build)`);
    dir = mkdtempSync(join(tmpdir(), 'rated-faults-'));
    bin = join(dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'nft'), nftStandIn(bin));
    chmodSync(join(bin, 'nft'), 0o755);
    setMode('pass');
    srv = await createNamespace('rtd-faults');
    socket = join(dir, 'rated.sock');
    config = join(dir, 'rated.yml');
    writeFileSync(config, [
      `receivers: { http: { address: 127.0.0.1, port: ${PORT} }, udp: null }`,
      'rules: [{ name: faults, limit: 2, window: 60s, block: 10m }]',
      'firewall: { backend: nftables, checkInterval: 2s }',
      `control: { socket: ${socket} }`,
      `state: { dir: ${join(dir, 'state')} }`,
      '',
    ].join('\n'));
    // Only the stand-in on PATH: the daemon finds nft there or nowhere.
    rated = await startRated({ namespace: srv, config, socket, wrap: ['env', `PATH=${bin}`] });
    fwd = await forwardInto(srv, PORT);
  });

  after(async () => {
    setMode('pass');
    await fwd?.close();
    await rated?.stop();
    await srv?.delete();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('F1 at start: without nft, run exits 1 with one line that says so', async (t) => {
    assert.ok(srv);
    const empty = join(dir, 'empty');
    mkdirSync(empty);
    const other = join(dir, 'other.yml');
    const cases: Array<[string, string, RegExp]> = [
      ['backend nftables', 'firewall: { backend: nftables }', /nft is not installed/],
      ['backend auto', 'firewall: { backend: auto }', /no usable firewall backend.*--dry-run/],
    ];
    for (const [what, firewall, expected] of cases) {
      injected++;
      writeFileSync(other, [
        `receivers: { http: { address: 127.0.0.1, port: ${PORT + 1} }, udp: null }`,
        firewall,
        `control: { socket: ${join(dir, 'other.sock')} }`,
        `state: { dir: ${join(dir, 'other-state')} }`,
        '',
      ].join('\n'));
      const r = await ratedCli(srv, ['run', '-c', other], { wrap: ['env', `PATH=${empty}`], timeoutMs: 15_000 });
      assert.equal(r.code, 1, `${what}: exit 1, got ${r.code}: ${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${what}: one line: ${r.stderr}`);
      assert.match(lines[0] ?? '', expected, what);
    }
    t.diagnostic('SPEC §2 makes this exit 1 (runtime failure), where HARDENING F1 suggests 78; the unit sets no RestartPreventExitStatus for it');
  });

  test('F1 at run time: nft vanishes; decisions are kept and reported, and reach the kernel when it returns', async () => {
    assert.ok(rated);
    injected++;
    const from = rated.lines.length;
    renameSync(join(bin, 'nft'), join(bin, 'nft.away'));
    try {
      const manual = await callApi(socket, 'POST', '/blocks', { ip: '198.51.100.10', for: '10m' });
      assert.equal(manual.status, 201, `the manual block is taken: ${manual.text}`);
      assert.deepEqual(await notify('198.51.100.20', 3), [204, 204, 204]);
      await waitFor(async () => (await listed()).includes('198.51.100.20'), { what: 'the rule block in the list' });
      assert.deepEqual(await v4(), [], 'nothing reached the kernel');
      const s = await status();
      assert.equal(s.status, 'up');
      assert.ok(s.lastErrors.some((e) => /nft: command not found/.test(e.error)), `the cause is reported: ${JSON.stringify(s.lastErrors)}`);
      // Several repair rounds fail meanwhile: the log says so a bounded number of times.
      await waitFor(async () => (await status()).lastErrors.length >= 4, { timeoutMs: 8000, what: 'repeated failed repairs' });
    } finally {
      renameSync(join(bin, 'nft.away'), join(bin, 'nft'));
    }
    const kernel = await waitFor(async () => {
      const k = await v4();
      return k.includes('198.51.100.10') && k.includes('198.51.100.20') ? k : null;
    }, { timeoutMs: 10_000, what: 'both blocks in the kernel once nft is back' }).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}${logs()}`, { cause: err });
    });
    assert.deepEqual(kernel, ['198.51.100.10', '198.51.100.20']);
    const entries = setEntries((await (srv as Namespace).run('nft', ['-j', 'list', 'set', 'inet', 'rated', 'v4'])).stdout);
    for (const e of entries) assert.ok(e.timeout !== null && e.timeout > 500 && e.timeout <= 600, `${e.val} has the rest of its 10 minutes: ${JSON.stringify(e)}`);
    const errors = rated.lines.slice(from).filter((l) => (l.level ?? 0) >= 50);
    assert.ok(errors.length <= 4, `errors are logged at a bounded rate, got ${errors.length}`);
    assert.deepEqual(await listed(), kernel, 'rated list agrees with the kernel');
  });

  test('F20: nft hangs; it and its children are killed, the decision is kept, and applied once nft answers', async () => {
    assert.ok(rated && srv);
    injected++;
    setMode('hang');
    let answered: { status: number; text: string } | null = null;
    const pending = callApi(socket, 'POST', '/blocks', { ip: '198.51.100.11', for: '10m' }, 60_000).then((r) => { answered = r; });
    try {
      // While nft hangs the daemon still answers: the control API, and the receiver.
      await waitFor(() => existsSync(join(bin, 'children')), { timeoutMs: 5000, what: 'a hanging nft' });
      assert.equal((await status()).status, 'up');
      assert.deepEqual(await notify('127.0.0.1', 1), [204], 'the receiver answers');
      await pending;
    } finally {
      setMode('pass');
    }
    assert.ok(answered);
    const a = answered as { status: number; text: string };
    assert.equal(a.status, 201, `the block was taken: ${a.text}`);
    const s = await status();
    assert.ok(s.lastErrors.some((e) => /nft did not finish within \d+ ms and was killed/.test(e.error)), `the timeout is reported: ${JSON.stringify(s.lastErrors)}`);
    // Every hanging nft, and what it started, is killed by its timeout; and they did not pile up.
    const hung = readFileSync(join(bin, 'children'), 'utf8').trim().split('\n').map(Number);
    assert.ok(hung.length <= 2 * 4, `at most a few nft runs hung at once (one commit, one repair, one check), got ${hung.length / 2}`);
    await waitFor(() => hung.every((pid) => !isRunning(pid)), { timeoutMs: 15_000, what: `the hung processes ${hung.join(' ')} to be killed` });
    await waitFor(async () => (await v4()).includes('198.51.100.11'), { timeoutMs: 15_000, what: '198.51.100.11 in the kernel after the hang' });
    assert.deepEqual(await listed(), await v4(), 'rated list agrees with the kernel');
  });

  test('F3: unblocking an element that is already gone from the kernel succeeds, alone or in a batch', async () => {
    assert.ok(srv);
    injected += 2;
    const errorsBefore = (await status()).lastErrors.length;
    for (const ip of ['198.51.100.12', '198.51.100.13']) {
      assert.equal((await callApi(socket, 'POST', '/blocks', { ip, for: '1h' })).status, 201);
      // As if its timeout had run out in the kernel.
      await srv.run('nft', ['delete', 'element', 'inet', 'rated', 'v4', `{ ${ip} }`]);
    }
    const alone = await callApi(socket, 'DELETE', '/blocks/198.51.100.12');
    assert.equal(alone.status, 200, alone.text);
    // The delete of a vanished element and an add, decided together.
    const [gone, added] = await Promise.all([
      callApi(socket, 'DELETE', '/blocks/198.51.100.13'),
      callApi(socket, 'POST', '/blocks', { ip: '198.51.100.14', for: '1h' }),
    ]);
    assert.equal(gone.status, 200, gone.text);
    assert.equal(added.status, 201, added.text);
    const k = await v4();
    assert.ok(k.includes('198.51.100.14') && !k.includes('198.51.100.12') && !k.includes('198.51.100.13'), `kernel: ${k.join(' ')}`);
    assert.equal((await status()).lastErrors.length, errorsBefore, 'no error');
    assert.deepEqual(await listed(), k, 'rated list agrees with the kernel');
  });

  test('F2: one poison element costs only itself, is reported, and is given up instead of retried forever', async (t) => {
    assert.ok(srv && rated);
    injected++;
    const poison = '198.51.100.33';
    const offenders = ['198.51.100.31', '198.51.100.32', poison, '198.51.100.34', '198.51.100.35'];
    const refusedBefore = (await status()).firewall.refused;
    setMode(`poison:${poison}`);
    try {
      // All five cross the limit in one write, so they share a batch.
      const payload = Buffer.concat(offenders.flatMap((ip) => Array.from({ length: 3 }, () => Buffer.from(`GET / HTTP/1.1\r\nHost: rated\r\nX-IP: ${ip}\r\n\r\n`))));
      const reply = await exchange(fwd as Forward, payload, { responses: 15 });
      assert.equal(reply.statuses.length, 15);
      await waitFor(async () => {
        const k = await v4();
        return offenders.filter((o) => o !== poison).every((o) => k.includes(o));
      }, { timeoutMs: 5000, what: 'the four good offenders in the kernel' });
      // Refused three times in a row (the batch, then repairs), then given up: no longer listed as in force.
      await waitFor(async () => !(await listed()).includes(poison), { timeoutMs: 10_000, what: `${poison} given up` });
      const s = await status();
      assert.ok(s.firewall.refused - refusedBefore >= 3, `the refusals are counted: ${s.firewall.refused - refusedBefore}`);
      assert.ok(s.lastErrors.some((e) => e.error.includes(poison)), 'the poison element is named in the errors');
      assert.ok(rated.lines.some((l) => l.msg === 'the firewall refused this block again and again; gave it up' && l.ip === poison), 'and in the log');
      const lines = (name: string): number => readFileSync(join(bin, name), 'utf8').trim().split('\n').length;
      const tries = lines('poisoned');
      // Two periodic checks later (each runs nft three times), nobody has tried it again.
      const calls = lines('calls');
      await waitFor(() => lines('calls') >= calls + 6, { timeoutMs: 10_000, what: 'two more periodic checks' });
      assert.equal(lines('poisoned'), tries, 'the poison element is not retried');
    } finally {
      setMode('pass');
    }
    const k = await v4();
    assert.ok(!k.includes(poison));
    assert.deepEqual(await listed(), k, 'rated list agrees with the kernel');
    assert.equal(rated.hasExited(), false);
    t.diagnostic(`faults injected in this suite: ${injected}`);
  });
});

describe('faults: F4, a full set', { skip: SKIP }, () => {
  let srv: Namespace | null = null;
  let dir = '';
  let socket = '';
  let rated: Rated | null = null;
  let fwd: Forward | null = null;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rated-full-'));
    srv = await createNamespace('rtd-full');
    socket = join(dir, 'rated.sock');
    const config = join(dir, 'rated.yml');
    writeFileSync(config, [
      `receivers: { http: { address: 127.0.0.1, port: ${PORT} }, udp: null }`,
      'rules: [{ name: full, limit: 2, window: 60s, block: 10m }]',
      // Sets of four elements: full after four blocks.
      'firewall: { backend: nftables, checkInterval: 2s, maxBlocks: 4 }',
      `control: { socket: ${socket} }`,
      `state: { dir: ${join(dir, 'state')} }`,
      '',
    ].join('\n'));
    rated = await startRated({ namespace: srv, config, socket });
    fwd = await forwardInto(srv, PORT);
  });

  after(async () => {
    await fwd?.close();
    await rated?.stop();
    await srv?.delete();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('offenders beyond the set\'s size are refused, reported as a full set and given up; the daemon and the allow list are unharmed', async () => {
    assert.ok(srv && rated && fwd);
    const offenders = Array.from({ length: 8 }, (_, i) => `198.51.100.${40 + i}`);
    const payload = Buffer.concat([...offenders, '127.0.0.1'].flatMap((ip) => Array.from({ length: 3 }, () => Buffer.from(`GET / HTTP/1.1\r\nHost: rated\r\nX-IP: ${ip}\r\n\r\n`))));
    const reply = await exchange(fwd, payload, { responses: 27 });
    assert.deepEqual(reply.statuses, Array<number>(27).fill(204));
    const kernel = await waitFor(async () => {
      const k = (await kernelSets(srv as Namespace)).v4;
      return k.length === 4 ? k : null;
    }, { timeoutMs: 5000, what: 'the set to fill up' });
    // Those the kernel would not take are given up after three refusals: the list shows what is in force.
    const list = await waitFor(async () => {
      const l = ((await callApi(socket, 'GET', '/blocks')).body as Array<{ ip: string }>).map((b) => b.ip).sort();
      return l.length === 4 ? l : null;
    }, { timeoutMs: 15_000, what: 'rated list to agree with the full set' }).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${rated?.output(30) ?? ''}`, { cause: err });
    });
    assert.deepEqual(list, kernel);
    const s = (await callApi(socket, 'GET', '/status')).body as Status;
    assert.equal(s.status, 'up');
    assert.ok(s.firewall.refused >= 4 * 3, `every refusal is counted: ${s.firewall.refused}`);
    assert.ok(s.lastErrors.some((e) => /set is full/.test(e.error)), `the error says the set is full: ${JSON.stringify(s.lastErrors)}`);
    const metrics = parseMetrics((await callApi(socket, 'GET', '/metrics')).text);
    assert.ok((metrics.get('rated_firewall_refused_total') ?? 0) >= 12);
    assert.ok(!kernel.includes('127.0.0.1'), 'the allow list still holds');
    assert.equal(rated.hasExited(), false);
    // Room again (a block ends): new offenders get in.
    assert.equal((await callApi(socket, 'DELETE', `/blocks/${kernel[0] ?? ''}`)).status, 200);
    assert.deepEqual(await exchange(fwd, Buffer.concat(Array.from({ length: 3 }, () => Buffer.from('GET / HTTP/1.1\r\nHost: rated\r\nX-IP: 198.51.100.60\r\n\r\n'))), { responses: 3 }).then((r) => r.statuses), [204, 204, 204]);
    await waitFor(async () => (await kernelSets(srv as Namespace)).v4.includes('198.51.100.60'), { timeoutMs: 5000, what: 'a new offender once there is room' });
  });
});
