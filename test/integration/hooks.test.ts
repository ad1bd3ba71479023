// Hooks (hooks.block, hooks.unblock): real programs run by the built daemon
// on real nftables in a namespace, for manual blocks, rule blocks, unblocks
// and expiries; a hook that hangs is killed with what it started, one that
// crashes is logged with its stderr, and a slow hook under a storm of
// blocks holds back no block: its runs beyond hooks.queue are dropped and
// counted. What is observed: what the programs wrote, the log, the metrics,
// the kernel's set.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanUp } from '../helpers/cleanup.js';
import { kernelElements } from '../helpers/kernel-set.js';
import { createNamespace, type Namespace } from '../helpers/netns.js';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { startRated, type Rated } from '../helpers/rated.js';
import { waitFor } from '../helpers/wait-for.js';

const TOOLS = ['ip', 'nft', 'curl', 'sh'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;

interface Event { event: string; ip: string; rule: string; count: string; json: unknown }

describe('hooks on block and unblock', { skip: SKIP }, () => {
  let srv: Namespace | undefined;
  let dir = '';
  let rated: Rated | undefined;
  let events = '';

  before(async () => {
    srv = await createNamespace('rtd-hook');
    dir = mkdtempSync(join(tmpdir(), 'rated-hooks-'));
    events = join(dir, 'events.log');
    // One line per run: the environment rated set, then the JSON it wrote on stdin.
    writeFileSync(join(dir, 'record'), '#!/bin/sh\n{ printf \'%s\\t%s\\t%s\\t%s\\t\' "$RATED_EVENT" "$RATED_IP" "$RATED_RULE" "$RATED_COUNT"; tr -d \'\\n\'; echo; } >> "$1"\n');
    // Starts a child that would outlive it, then hangs.
    writeFileSync(join(dir, 'hang'), '#!/bin/sh\nsleep 300 &\necho $! > "$1"\nwait\n');
    writeFileSync(join(dir, 'crash'), '#!/bin/sh\necho "abuse contact unreachable: boom" >&2\nexit 3\n');
    writeFileSync(join(dir, 'slow'), '#!/bin/sh\nsleep 1\n');
    for (const f of ['record', 'hang', 'crash', 'slow']) chmodSync(join(dir, f), 0o755);
  });

  after(() => cleanUp([() => rated?.stop(), () => srv?.delete(), () => rmSync(dir, { recursive: true, force: true })]));

  async function start(hooks: string): Promise<Rated> {
    await rated?.stop();
    const state = join(dir, `state-${Date.now()}`);
    mkdirSync(state, { mode: 0o750 });
    const config = join(dir, 'rated.yml');
    writeFileSync(config, [
      'receivers:',
      '  http: { address: 127.0.0.1, port: 8080 }',
      'rules:',
      '  - { name: flood, limit: 2, window: 60s, block: 10m }',
      `hooks: ${hooks}`,
      `control: { socket: ${join(dir, 'rated.sock')} }`,
      `state: { dir: ${state} }`,
      'log: { level: debug }',
      '',
    ].join('\n'));
    rated = await startRated({ namespace: srv!, config, socket: join(dir, 'rated.sock') });
    return rated;
  }

  function recorded(): Event[] {
    if (!existsSync(events)) return [];
    return readFileSync(events, 'utf8').split('\n').filter((l) => l !== '').map((l) => {
      const [event = '', ip = '', rule = '', count = '', json = ''] = l.split('\t');
      return { event, ip, rule, count, json: JSON.parse(json) as unknown };
    });
  }

  async function metric(r: Rated, line: RegExp): Promise<number> {
    const res = await r.cli(['status', '--json']);
    assert.equal(res.code, 0);
    const text = (await srv!.exec('curl', ['-s', '--unix-socket', join(dir, 'rated.sock'), 'http://rated/metrics'])).stdout;
    const m = line.exec(text);
    return m ? Number(m[1]) : 0;
  }

  test('a block and an unblock each run their program with the block\'s JSON on stdin and RATED_* set', async () => {
    const r = await start(`{ block: ["${join(dir, 'record')}", "${events}"], unblock: ["${join(dir, 'record')}", "${events}"] }`);
    const b = await r.cli(['block', '192.0.2.7', '--for', '1h', '--reason', 'scanner']);
    assert.equal(b.code, 0, b.stderr);
    for (let i = 0; i < 3; i++) await srv!.exec('curl', ['-s', '-o', '/dev/null', '-H', 'X-IP: 203.0.113.5', 'http://127.0.0.1:8080/']);
    await waitFor(() => recorded().length >= 2, { timeoutMs: 10_000, what: 'two block hooks to run' });
    assert.equal((await r.cli(['unblock', '192.0.2.7'])).code, 0);
    await waitFor(() => recorded().length >= 3, { timeoutMs: 10_000, what: 'the unblock hook to run' });
    const [manual, rule, lifted] = [recorded().find((e) => e.event === 'block' && e.ip === '192.0.2.7'), recorded().find((e) => e.ip === '203.0.113.5'), recorded().find((e) => e.event === 'unblock')];
    assert.deepEqual(manual && { ...manual, json: undefined }, { event: 'block', ip: '192.0.2.7', rule: '', count: '1', json: undefined });
    assert.deepEqual((manual?.json as { ip: string; reason: string; source: string }).reason, 'scanner');
    assert.equal(rule?.rule, 'flood');
    assert.equal((rule?.json as { source: string; hits: number }).source, 'rule');
    assert.equal(lifted?.ip, '192.0.2.7');
    assert.equal((lifted?.json as { ip: string }).ip, '192.0.2.7');
    assert.equal(await metric(r, /^rated_hook_runs_total\{event="block",outcome="ok"\} (\d+)$/m), 2);
  });

  test('a hook that hangs is killed after hooks.timeout with what it started; one that crashes is logged with its stderr', async () => {
    const pidFile = join(dir, 'hang.pid');
    const r = await start(`{ block: ["${join(dir, 'hang')}", "${pidFile}"], unblock: ["${join(dir, 'crash')}"], timeout: 1s }`);
    assert.equal((await r.cli(['block', '192.0.2.8', '--for', '1h'])).code, 0);
    const killed = await r.waitForLine((l) => String(l.msg).startsWith('hook killed'), { timeoutMs: 10_000 });
    assert.equal(killed.event, 'block');
    const child = Number(readFileSync(pidFile, 'utf8'));
    await waitFor(() => !existsSync(`/proc/${child}`) || readFileSync(`/proc/${child}/stat`, 'utf8').split(' ')[2] === 'Z', { timeoutMs: 5000, what: 'the hook\'s own child to be killed too' });
    assert.equal((await r.cli(['unblock', '192.0.2.8'])).code, 0);
    const failed = await r.waitForLine((l) => l.msg === 'hook failed', { timeoutMs: 10_000 });
    assert.equal(failed.exitCode, 3);
    assert.match(String(failed.stderr), /boom/);
    assert.equal(await metric(r, /^rated_hook_runs_total\{event="block",outcome="timeout"\} (\d+)$/m), 1);
    assert.equal(await metric(r, /^rated_hook_runs_total\{event="unblock",outcome="failed"\} (\d+)$/m), 1);
    assert.equal(r.hasExited(), false);
  });

  test('a slow hook under a storm of 3,000 blocks holds back no block; runs past hooks.queue are dropped and counted', async (t) => {
    const r = await start(`{ block: ["${join(dir, 'slow')}"], concurrency: 2, queue: 100 }`);
    const list = Array.from({ length: 3000 }, (_, i) => `11.0.${i >> 8}.${i & 255}`).join('\n');
    const t0 = Date.now();
    const imp = await r.cli(['import', '-', '--for', '1h'], { input: list });
    assert.equal(imp.code, 0, imp.stderr);
    t.diagnostic(`3,000 blocks with a 1 s hook: imported in ${Date.now() - t0} ms`);
    assert.equal((await kernelElements(srv!)).filter((e) => e.text.startsWith('11.')).length, 3000, 'every block is in the kernel');
    const dropped = await metric(r, /^rated_hook_runs_total\{event="block",outcome="dropped"\} (\d+)$/m);
    assert.ok(dropped >= 3000 - 100 - 2 - 10 && dropped <= 3000 - 100, `dropped ${dropped}`);
    assert.ok(r.lines.some((l) => String(l.msg).startsWith('hook queue full')), 'said so in the log');
    assert.ok(r.lines.filter((l) => String(l.msg).startsWith('hook queue full')).length <= 2, 'at a bounded rate');
  });

  test('hooks.batch: one run per batch with a JSON array, RATED_COUNT its length', async () => {
    rmSync(events, { force: true });
    const r = await start(`{ block: ["${join(dir, 'record')}", "${events}"], batch: true, concurrency: 1 }`);
    const list = Array.from({ length: 50 }, (_, i) => `11.1.0.${i + 1}`).join('\n');
    assert.equal((await r.cli(['import', '-', '--for', '1h'], { input: list })).code, 0);
    await waitFor(() => recorded().reduce((n, e) => n + Number(e.count), 0) >= 50, { timeoutMs: 10_000, what: 'every block reported' });
    const runs = recorded();
    assert.ok(runs.length < 50, `fewer runs than blocks: ${runs.length}`);
    assert.deepEqual(runs.flatMap((e) => (e.json as Array<{ ip: string }>).map((b) => b.ip)).sort(), list.split('\n').sort());
  });

  test('a program that is not an absolute path is a configuration error naming the key', async () => {
    await rated?.stop();
    const config = join(dir, 'bad.yml');
    writeFileSync(config, 'hooks: { block: ["notify-send"] }\n');
    const r = await srv!.exec(process.execPath, [join(process.cwd(), 'bin/rated'), 'check-config', '-c', config]);
    assert.equal(r.exitCode, 2);
    assert.match(r.stderr, /hooks\.block/);
    assert.match(r.stderr, /absolute path/);
  });
});
