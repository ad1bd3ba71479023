// The two large faults of HARDENING.md §5, against the built daemon on
// nftables in a namespace: kill -9 of the daemon and of nft while a
// 100,000-element batch commits (F5), then a restart; and a ban storm of
// 100,000 offenders through the HTTP receiver while short blocks come due
// (F19). Both end with the kernel and `rated list` holding the same blocks.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { callApi } from '../../src/control/client.js';
import { flood } from '../helpers/flood.js';
import { setElements, setEntries } from '../helpers/kernel-set.js';
import { createNamespace, type Namespace } from '../helpers/netns.js';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { BIN, MAIN_JS, ROOT, startRated, type Rated } from '../helpers/rated.js';
import { waitFor } from '../helpers/wait-for.js';

const TOOLS = ['ip', 'nft'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;
const COUNT = 100_000;
const PORT = 8080;

/** Client i of 100,000: 10.1.0.0 upwards. */
const address = (i: number): string => `10.${1 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;

function children(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return [];
  }
}

/** Resident memory of a process, in MiB. */
export function rssMiB(pid: number): number {
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Math.round(Number(kb) / 1024);
}

async function v4Count(ns: Namespace): Promise<number> {
  return setElements((await ns.run('nft', ['-j', 'list', 'set', 'inet', 'rated', 'v4'])).stdout).length;
}

function writeConfig(dir: string, rule: string, socket: string): string {
  const config = join(dir, 'rated.yml');
  writeFileSync(config, [
    `receivers: { http: { address: 127.0.0.1, port: ${PORT} }, udp: null }`,
    `rules: [${rule}]`,
    'firewall: { backend: nftables }',
    `control: { socket: ${socket} }`,
    `state: { dir: ${join(dir, 'state')} }`,
    '',
  ].join('\n'));
  return config;
}

describe('faults: F5, kill -9 while a 100,000-element batch commits, then a restart', { skip: SKIP }, () => {
  let srv: Namespace | null = null;
  let dir = '';
  let rated: Rated | null = null;
  const pids: number[] = [];

  before(async () => {
    assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first (npm run build)`);
    dir = mkdtempSync(join(tmpdir(), 'rated-kill9-'));
    srv = await createNamespace('rtd-kill9');
  });

  after(async () => {
    await rated?.stop();
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await srv?.delete();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('the kernel holds all or nothing of the batch; after a restart, kernel and list hold exactly the journal\'s blocks', async (t) => {
    assert.ok(srv);
    const socket = join(dir, 'rated.sock');
    const config = writeConfig(dir, '{ name: storm, limit: 1, window: 60s, block: 1h }', socket);
    // A journal of 100,000 blocks the kernel does not have: the start puts them all back in one batch.
    const now = Date.now();
    const blocks = Array.from({ length: COUNT }, (_, i) => ({
      ip: address(i), rule: 'storm', reason: '2 requests in 60s', source: 'rule', since: now, expires: now + 3_600_000 + i, hits: 2,
    }));
    mkdirSync(join(dir, 'state'), { mode: 0o750 });
    writeFileSync(join(dir, 'state', 'blocks.json'), JSON.stringify({ version: 1, savedAt: new Date(now).toISOString(), blocks, offences: [] }));

    const child = spawn('ip', ['netns', 'exec', srv.name, process.execPath, BIN, 'run', '-c', config, '--socket', socket], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
    assert.ok(child.pid);
    pids.push(child.pid);
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    // The moment nft reads a batch of megabytes, kill the daemon and nft together.
    const victim = await waitFor(() => {
      for (const pid of children(child.pid as number)) {
        const argv = cmdline(pid);
        if (!argv.some((a) => a.endsWith('nft')) || !argv.includes('-f')) continue;
        try {
          if (statSync(`/proc/${pid}/fd/0`).size > 1_000_000) return pid;
        } catch {
          // gone already
        }
      }
      return null;
    }, { timeoutMs: 60_000, intervalMs: 2, what: 'nft committing the 100,000-element batch' });
    process.kill(child.pid, 'SIGKILL');
    process.kill(victim, 'SIGKILL');
    await exited;
    const after = await v4Count(srv);
    t.diagnostic(`after kill -9 the kernel holds ${after} of ${COUNT}`);
    assert.ok(after === 0 || after === COUNT, `all or nothing, never part of the batch: ${after}`);

    rated = await startRated({ namespace: srv, config, socket, startTimeoutMs: 90_000 });
    t.diagnostic(`restart: ${JSON.stringify({ journal: rated.started.journal, adopted: rated.started.adopted, restored: rated.started.restored })}`);
    await waitFor(async () => (await v4Count(srv as Namespace)) === COUNT, { timeoutMs: 30_000, intervalMs: 500, what: 'all 100,000 blocks in the kernel' });
    const listing = (await srv.run('nft', ['-j', 'list', 'set', 'inet', 'rated', 'v4'])).stdout;
    const kernel = setElements(listing);
    const listed = ((await callApi(socket, 'GET', '/blocks', undefined, 60_000)).body as Array<{ ip: string; source: string; expires: string }>);
    const wanted = blocks.map((b) => b.ip).sort();
    assert.deepEqual(kernel, wanted, 'the kernel holds exactly the journal\'s blocks: none lost, none leaked');
    assert.deepEqual(listed.map((b) => b.ip).sort(), wanted, 'rated list holds the same');
    assert.ok(listed.every((b) => b.source === 'rule'), 'each keeps its journal record');
    // The kernel's timeouts are the blocks' remaining time, not a fresh hour.
    const expires = new Map(listed.map((b) => [b.ip, Date.parse(b.expires)]));
    const checkedAt = Date.now();
    for (const e of setEntries(listing).slice(0, 1000)) {
      const remaining = ((expires.get(e.val) ?? 0) - checkedAt) / 1000;
      assert.ok(e.expires !== null && Math.abs(e.expires - remaining) < 30, `${e.val}: kernel ${String(e.expires)} s, list ${Math.round(remaining)} s`);
    }
  });
});

describe('faults: F19, a ban storm of 100,000 offenders while short blocks come due', { skip: SKIP }, () => {
  let srv: Namespace | null = null;
  let dir = '';
  let socket = '';
  let rated: Rated | null = null;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rated-storm-'));
    srv = await createNamespace('rtd-storm');
    socket = join(dir, 'rated.sock');
    const config = writeConfig(dir, '{ name: storm, limit: 1, window: 60s, block: 10m }', socket);
    rated = await startRated({ namespace: srv, config, socket });
  });

  after(async () => {
    await rated?.stop();
    await srv?.delete();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('every offender is blocked in batches, short blocks are lifted on time meanwhile, and kernel and list agree', async (t) => {
    assert.ok(srv && rated);
    const rssBefore = rssMiB(rated.pid);
    const storm = flood(srv, PORT, { count: COUNT, hits: 2, address: 'return `10.${1 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`', connections: 4, chunk: 250 });
    storm.done.catch(() => undefined);
    const short: Array<{ ip: string; expires: number }> = [];
    let result;
    try {
      // Short IPv6 blocks, due one a second while the storm goes on; the operator's block is not held up by it.
      await waitFor(() => storm.answered() > 2000, { timeoutMs: 20_000, what: 'the storm to start' });
      for (let i = 0; i < 8; i++) {
        const r = await callApi(socket, 'POST', '/blocks', { ip: `2001:db8:5::${i + 1}`, for: `${2 + i}s` });
        assert.equal(r.status, 201, r.text);
        const b = r.body as { ip: string; expires: string };
        short.push({ ip: b.ip, expires: Date.parse(b.expires) });
      }
      t.diagnostic(`the short blocks were placed with ${storm.answered()} of ${COUNT * 2} notifications answered`);
      result = await storm.done;
    } finally {
      storm.stop();
    }
    const stormEnd = Date.now();
    t.diagnostic(`${result.answered} notifications answered in ${result.ms} ms`);
    assert.equal(result.answered, COUNT * 2, 'every notification was answered');

    await waitFor(async () => (await v4Count(srv as Namespace)) === COUNT, { timeoutMs: 60_000, intervalMs: 500, what: `${COUNT} blocks in the kernel` }).catch(async (err: unknown) => {
      throw new Error(`${(err as Error).message}; the kernel holds ${await v4Count(srv as Namespace)}\n${rated?.output(20) ?? ''}`, { cause: err });
    });
    // Each short block was lifted by the daemon close to its time, whatever the storm.
    const lifted = await waitFor(() => {
      const lines = (rated as Rated).lines.filter((l) => l.msg === 'block expired' && typeof l.ip === 'string' && l.ip.startsWith('2001:db8:5::'));
      return lines.length === short.length ? lines : null;
    }, { timeoutMs: 15_000, what: 'every short block to be lifted' });
    let duringStorm = 0;
    for (const s of short) {
      const line = lifted.find((l) => l.ip === s.ip);
      const at = Date.parse(String(line?.time));
      const late = at - s.expires;
      assert.ok(late >= 0 && late < 5000, `${s.ip} lifted ${late} ms after its time`);
      if (at < stormEnd) duringStorm++;
    }
    t.diagnostic(`${duringStorm} of ${short.length} short blocks were lifted while the storm went on`);
    const v6 = setElements((await srv.run('nft', ['-j', 'list', 'set', 'inet', 'rated', 'v6'])).stdout);
    assert.deepEqual(v6, [], 'and they are gone from the kernel');

    const kernel = setElements((await srv.run('nft', ['-j', 'list', 'set', 'inet', 'rated', 'v4'])).stdout);
    const listed = ((await callApi(socket, 'GET', '/blocks', undefined, 60_000)).body as Array<{ ip: string }>).map((b) => b.ip).sort();
    assert.equal(kernel.length, COUNT);
    assert.deepEqual(listed, kernel, 'rated list agrees with the kernel');
    const status = (await callApi(socket, 'GET', '/status')).body as { firewall: { batches: number; refused: number }; lastErrors: unknown[] };
    t.diagnostic(`${status.firewall.batches} batches; daemon RSS ${rssBefore} MiB before, ${rssMiB(rated.pid)} MiB after`);
    assert.ok(status.firewall.batches < COUNT / 10, `offenders were batched: ${status.firewall.batches} batches for ${COUNT}`);
    assert.equal(status.firewall.refused, 0);
    assert.deepEqual(status.lastErrors, []);
    assert.equal(rated.hasExited(), false);
  });
});
