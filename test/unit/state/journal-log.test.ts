// The journal's append log: a change costs one short line whatever the number
// of blocks; a snapshot gathers the lines up and the logs it holds go; a crash
// at any point (a line cut short, a snapshot never renamed into place) loses
// no complete line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  appendFileSync, chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { Block } from '../../../src/block.js';
import { createLogger } from '../../../src/log.js';
import { blockLine, Journal, liftLine, offenceLine } from '../../../src/state/journal.js';
import { JournalKeeper } from '../../../src/state/keeper.js';
import { net } from '../../helpers/net.js';

const NOW = Date.now();
const HOUR = 3_600_000;

function block(ip: string, expires = NOW + HOUR): Block {
  return { net: net(ip), rule: 'r', reason: 'x', source: 'rule', since: NOW, expires, hits: 3 };
}

function scratch(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'rated-log-'));
  chmodSync(dir, 0o750);
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A keeper over a plain map of blocks, as the Blocker would drive it. */
function keeperOf(dir: string) {
  const blocks = new Map<string, Block>();
  const lines: string[] = [];
  const log = createLogger('info', new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done(); } }));
  const keeper = new JournalKeeper({
    journal: new Journal(dir),
    blocks: { adopt: (b) => blocks.set(b.net.text, b), all: () => [...blocks.values()], get size() { return blocks.size; } },
    offences: { exportOffences: () => [], importOffences: () => undefined },
    isAllowed: () => false, longestRuleBlockMs: 24 * HOUR, now: () => NOW, log,
  });
  const put = (b: Block): void => {
    blocks.set(b.net.text, b);
    keeper.put(b);
  };
  const lift = (ip: string): void => {
    blocks.delete(net(ip).text);
    keeper.lift(net(ip));
  };
  return { keeper, blocks, put, lift, lines };
}

const ips = (blocks: readonly Block[]): string[] => blocks.map((b) => b.net.text).sort();
const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 50));

test('each change is appended to the log; the snapshot is not rewritten; a new reader sees every change', async () => {
  const s = scratch();
  try {
    const k = keeperOf(s.dir);
    await k.keeper.restoreAsync();
    k.put(block('198.51.100.1'));
    k.put(block('2001:db8:1::/64'));
    k.put({ ...block('203.0.113.0/24'), reason: 'zu viele Anfragen: 攻撃 ☃' });
    k.lift('198.51.100.1');
    k.keeper.offence('203.0.113.9', { count: 2, lastAt: NOW });
    await settle();
    assert.equal(existsSync(join(s.dir, 'blocks.json')), false, 'no snapshot for five changes');
    const log = readFileSync(join(s.dir, 'blocks-0.log'), 'utf8');
    assert.equal(log.split('\n').length, 6, 'one line per change');
    const loaded = new Journal(s.dir).load(false);
    assert.deepEqual(ips(loaded.blocks), ['2001:db8:1::/64', '203.0.113.0/24']);
    assert.deepEqual(loaded.offences, [['203.0.113.9', { count: 2, lastAt: NOW }]]);
    assert.equal(loaded.error, null);
    const later = await new Journal(s.dir).loadAsync(false);
    assert.deepEqual(ips(later.blocks), ['2001:db8:1::/64', '203.0.113.0/24']);
    assert.equal(later.blocks.find((b) => b.net.text === '203.0.113.0/24')?.reason, 'zu viele Anfragen: 攻撃 ☃', 'bytes decoded a line at a time');
    await k.keeper.close();
  } finally {
    s.cleanup();
  }
});

test('once the log holds more lines than a snapshot is worth, a snapshot is written and the logs it holds go', async () => {
  const s = scratch();
  try {
    const k = keeperOf(s.dir);
    await k.keeper.restoreAsync();
    for (let i = 0; i < 20_500; i++) k.put(block(`10.1.${i >> 8}.${i & 255}`));
    for (let i = 0; i < 500; i++) k.lift(`10.1.${i >> 8}.${i & 255}`);
    const deadline = Date.now() + 10_000;
    while (!existsSync(join(s.dir, 'blocks.json')) && Date.now() < deadline) await settle();
    await settle();
    await k.keeper.close();
    const files = readdirSync(s.dir).filter((f) => f.endsWith('.log'));
    assert.ok(!files.includes('blocks-0.log'), `the log the snapshot holds is gone: ${files.join(', ')}`);
    const loaded = new Journal(s.dir).load(false);
    assert.equal(loaded.blocks.length, 20_000);
    assert.equal(loaded.blocks.some((b) => b.net.text === '10.1.0.1'), false, 'a lifted block stays lifted');
  } finally {
    s.cleanup();
  }
});

test('a line cut short is never read, and appends go on in a new log; a damaged line costs only itself', async () => {
  const s = scratch();
  try {
    const journal = new Journal(s.dir);
    journal.save({ blocks: [block('198.51.100.7')], offences: [] });
    const log = journal.logPath(1);
    writeFileSync(log, `${blockLine(block('198.51.100.8'))}\n{"ip":"198.51.100.9",\n${blockLine(block('198.51.100.10'))}\n${blockLine(block('198.51.100.11')).slice(0, 20)}`);
    const reader = new Journal(s.dir);
    const loaded = reader.load(false);
    assert.deepEqual(ips(loaded.blocks), ['198.51.100.10', '198.51.100.7', '198.51.100.8']);
    assert.deepEqual(loaded.rejected, ['a damaged line in blocks-1.log'], 'the damaged line is said; the torn one is not');
    await reader.append(`${blockLine(block('198.51.100.12'))}\n`);
    await reader.closeLog();
    assert.ok(existsSync(reader.logPath(2)), 'after a torn line appends go to a new log');
    assert.deepEqual(ips(new Journal(s.dir).load(false).blocks), ['198.51.100.10', '198.51.100.12', '198.51.100.7', '198.51.100.8']);
  } finally {
    s.cleanup();
  }
});

test('a snapshot never renamed into place (a crash while it was written) loses nothing: the old snapshot and both logs are read', async () => {
  const s = scratch();
  try {
    const journal = new Journal(s.dir);
    journal.save({ blocks: [block('198.51.100.1')], offences: [] });
    await journal.append(`${blockLine(block('198.51.100.2'))}\n`);
    // The next snapshot began (its log is 2) but was never renamed into place.
    writeFileSync(join(s.dir, 'blocks.json.1.abc.tmp'), '{"version":1,"log":2,"blocks":[');
    writeFileSync(journal.logPath(2), `${liftLine(net('198.51.100.1'))}\n${blockLine(block('198.51.100.3'))}\n`);
    await journal.closeLog();
    assert.deepEqual(ips(new Journal(s.dir).load(false).blocks), ['198.51.100.2', '198.51.100.3']);
    // A log older than the snapshot is what the snapshot already holds: never read again.
    writeFileSync(journal.logPath(0), `${blockLine(block('198.51.100.99'))}\n`);
    assert.deepEqual(ips(new Journal(s.dir).load(false).blocks), ['198.51.100.2', '198.51.100.3']);
  } finally {
    s.cleanup();
  }
});

test('lines applied twice change nothing: every line states a whole block or offence', () => {
  const s = scratch();
  try {
    const journal = new Journal(s.dir);
    const lines = [
      blockLine(block('198.51.100.1')), offenceLine('198.51.100.1', { count: 1, lastAt: NOW }),
      blockLine(block('198.51.100.1', NOW + 2 * HOUR)), liftLine(net('198.51.100.2')), offenceLine('198.51.100.3', null),
    ].join('\n') + '\n';
    journal.save({ blocks: [block('198.51.100.2')], offences: [['198.51.100.3', { count: 4, lastAt: NOW }]] });
    writeFileSync(journal.logPath(1), lines);
    const once = new Journal(s.dir).load(false);
    appendFileSync(journal.logPath(1), lines);
    const twice = new Journal(s.dir).load(false);
    assert.deepEqual(twice.blocks, once.blocks);
    assert.deepEqual(twice.offences, once.offences);
    assert.deepEqual(ips(once.blocks), ['198.51.100.1']);
    assert.equal(once.blocks[0]?.expires, NOW + 2 * HOUR, 'the later line wins');
    assert.deepEqual(once.offences, [['198.51.100.1', { count: 1, lastAt: NOW }]]);
  } finally {
    s.cleanup();
  }
});

test('a log that is a link is not followed: it is moved aside and said; the rest is read', () => {
  const s = scratch();
  try {
    const target = join(s.dir, '..', `${s.dir.split('/').at(-1) ?? ''}-target`);
    writeFileSync(target, `${blockLine(block('198.51.100.66'))}\n`);
    try {
      const journal = new Journal(s.dir);
      journal.save({ blocks: [block('198.51.100.1')], offences: [] });
      symlinkSync(target, journal.logPath(1));
      const loaded = new Journal(s.dir).load(true);
      assert.deepEqual(ips(loaded.blocks), ['198.51.100.1']);
      assert.match((loaded.rejected ?? []).join(' '), /blocks-1\.log is a symbolic link/);
      assert.equal(existsSync(journal.logPath(1)), false, 'the link was moved aside');
      assert.equal(readFileSync(target, 'utf8'), `${blockLine(block('198.51.100.66'))}\n`, 'its target is untouched');
    } finally {
      rmSync(target, { force: true });
    }
  } finally {
    s.cleanup();
  }
});
