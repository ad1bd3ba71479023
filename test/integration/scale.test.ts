// 100,000 blocks in force (SPEC §5, §6, §7): the built daemon on real
// nftables in a namespace, its journal holding 100,000 blocks, an offender
// in another namespace behind a veth pair. What an operator under attack
// observes: the receivers answer at once after a start, the reconcile runs
// behind them, a manual block and unblock still act on the offender's
// packets, a new offender is blocked, `rated list --limit` answers, and no
// firewall error is logged. Times are printed, never asserted: speed is
// measured in bench/ (`npm run bench -- scale`).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { cleanUp } from '../helpers/cleanup.js';
import { kernelElements } from '../helpers/kernel-set.js';
import { createNamespace, veth, type Namespace } from '../helpers/netns.js';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { startRated, type LogLine, type Rated } from '../helpers/rated.js';
import { waitFor } from '../helpers/wait-for.js';

const TOOLS = ['ip', 'nft', 'ping', 'curl'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;
const BLOCKS = 100_000;
const PORT = 8080;
const SRV = '10.88.1.1';
const BAD = '10.88.1.2';

/** 100,000 distinct addresses in 11.0.0.0/8 and up, none of them the offender's. */
function journal(now: number): string {
  const blocks: string[] = [];
  for (let i = 0; i < BLOCKS; i++) {
    const ip = `${11 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}.9`;
    blocks.push(JSON.stringify({ ip, rule: 'flood', reason: '2 requests in 60s', source: 'rule', since: now - 60_000, expires: now + 3_600_000, hits: 2 }));
  }
  return `{"version":1,"savedAt":"${new Date(now).toISOString()}","blocks":[${blocks.join(',')}],"offences":[]}`;
}

describe('100,000 blocks in force', { skip: SKIP }, () => {
  let srv: Namespace | undefined;
  let bad: Namespace | undefined;
  let dir = '';
  let rated: Rated | undefined;
  let config = '';

  before(async () => {
    srv = await createNamespace('rtd-scale');
    bad = await createNamespace('rtd-scaleb');
    await veth(srv, bad, { a: `${SRV}/24`, b: `${BAD}/24` });
    dir = mkdtempSync(join(tmpdir(), 'rated-scale-'));
    const state = join(dir, 'state');
    mkdirSync(state, { mode: 0o750 });
    writeFileSync(join(state, 'blocks.json'), journal(Date.now()), { mode: 0o640 });
    config = join(dir, 'rated.yml');
    writeFileSync(config, [
      'receivers:',
      `  http: { address: 127.0.0.1, port: ${PORT} }`,
      'rules:',
      '  - { name: flood, limit: 1, window: 60s, block: 1h }',
      'firewall: { checkInterval: 5s }',
      `control: { socket: ${join(dir, 'rated.sock')} }`,
      `state: { dir: ${state} }`,
      '',
    ].join('\n'));
  });

  after(() => cleanUp([() => rated?.stop(), () => bad?.delete(), () => srv?.delete(), () => rmSync(dir, { recursive: true, force: true })]));

  const ping = async (): Promise<boolean> => (await bad!.exec('ping', ['-n', '-c1', '-W1', SRV])).exitCode === 0;
  const errors = (): LogLine[] => (rated?.lines ?? []).filter((l) => (l.level ?? 0) >= 50 || /firewall error|did not finish/.test(String(l.msg)));

  test('a start restores the journal, answers at once and reconciles behind the receivers', async (t) => {
    const t0 = performance.now();
    rated = await startRated({ namespace: srv!, config, socket: join(dir, 'rated.sock'), waitReconciled: false, startTimeoutMs: 60_000 });
    const startedMs = performance.now() - t0;
    // The control socket answers while the journal is still being read.
    const status = await rated.cli(['status', '--json']);
    assert.equal(status.code, 0, status.stderr);
    const reconciled = await rated.waitForLine((l) => String(l.msg).startsWith('reconcile'), { timeoutMs: 120_000 });
    assert.equal(reconciled.msg, 'reconciled with the kernel', JSON.stringify(reconciled));
    assert.deepEqual(reconciled.journal, { blocks: BLOCKS, expired: 0, refused: 0, invalid: 0 });
    assert.equal(reconciled.restored, BLOCKS, 'every journal block went back to the kernel');
    const after = await rated.cli(['status', '--json']);
    assert.equal((JSON.parse(after.stdout) as { activeBlocks: number }).activeBlocks, BLOCKS);
    const inKernel = (await kernelElements(srv!)).filter((e) => e.set === 'v4');
    assert.equal(inKernel.length, BLOCKS, 'the kernel holds them all');
    assert.ok(inKernel.every((e) => e.timeout !== null && e.timeout > 3500 && e.timeout <= 3600), 'each with its time left');
    t.diagnostic(`rated started ${Math.round(startedMs)} ms after spawn; reconcile ${String(reconciled.reconcileMs)} ms behind it`);
    assert.deepEqual(errors(), []);
  });

  test('a manual block drops the offender\'s packets; unblock lets them through', async (t) => {
    assert.ok(rated);
    await waitFor(ping, { timeoutMs: 10_000, what: 'the offender to reach the server before any block' });
    const t0 = performance.now();
    const r = await rated.cli(['block', BAD, '--for', '1h']);
    assert.equal(r.code, 0, r.stderr);
    await waitFor(async () => !(await ping()), { timeoutMs: 10_000, what: 'the blocked offender\'s ping to fail' });
    const blockMs = performance.now() - t0;
    const t1 = performance.now();
    const u = await rated.cli(['unblock', BAD]);
    assert.equal(u.code, 0, u.stderr);
    await waitFor(ping, { timeoutMs: 10_000, what: 'the unblocked offender\'s ping to pass' });
    t.diagnostic(`with ${BLOCKS} blocks: rated block until dropped ${Math.round(blockMs)} ms, rated unblock until through ${Math.round(performance.now() - t1)} ms`);
    assert.deepEqual(errors(), []);
  });

  test('a new offender over the limit is blocked', async () => {
    assert.ok(rated);
    for (let i = 0; i < 3; i++) {
      const res = await srv!.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'X-IP: 203.0.113.77', `http://127.0.0.1:${PORT}/`]);
      assert.ok(['200', '204'].includes(res.stdout.trim()), `notification answered ${res.stdout}`);
    }
    await waitFor(async () => (await srv!.exec('nft', ['get', 'element', 'inet', 'rated', 'v4', '{ 203.0.113.77 }'])).exitCode === 0, {
      timeoutMs: 10_000, what: 'the new offender in the kernel set',
    });
  });

  test('rated list --limit answers with the first blocks; the periodic check logs no drift and no error', async () => {
    assert.ok(rated);
    const r = await rated.cli(['list', '--json', '--limit', '3', '--sort', 'since']);
    assert.equal(r.code, 0, r.stderr);
    const blocks = JSON.parse(r.stdout) as Array<{ ip: string }>;
    assert.equal(blocks.length, 3);
    assert.equal(blocks[0]?.ip, '203.0.113.77', 'the newest first');
    const table = await rated.cli(['list', '--limit', '5']);
    assert.match(table.stdout, /^5 active blocks$/m);
    // Two periodic checks (checkInterval 5s) pass without listing 100,000 elements into a drift repair.
    await new Promise((resolve) => setTimeout(resolve, 11_000));
    assert.deepEqual(rated.lines.filter((l) => /differed|repaired/.test(String(l.msg))), []);
    assert.deepEqual(errors(), []);
  });
});
