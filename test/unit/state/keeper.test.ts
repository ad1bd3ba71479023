// The journal's keeper: what a restore adopts, skips and reports, that nothing
// is written before the journal was read, and that a failing disk is said
// once and retried while protection goes on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Block } from '../../../src/block.js';
import { createLogger } from '../../../src/log.js';
import { Journal } from '../../../src/state/journal.js';
import { JournalKeeper, type OffenceBook } from '../../../src/state/keeper.js';
import { net } from '../../helpers/net.js';
import { waitFor } from '../../helpers/wait-for.js';
import { Writable } from 'node:stream';

const NOW = 1_800_000_000_000;
const HOUR = 3_600_000;

function stored(ip: string, source: string, expires: number | null): Record<string, unknown> {
  return { ip, rule: 'default', reason: 'r', source, since: NOW - 1000, expires, hits: 9 };
}

function setup(blocks: Array<Record<string, unknown>>, allowed: readonly string[] = []) {
  const dir = mkdtempSync(join(tmpdir(), 'rated-keeper-'));
  chmodSync(dir, 0o750);
  writeFileSync(join(dir, 'blocks.json'), JSON.stringify({ version: 1, blocks, offences: [['198.51.100.1', { count: 2, lastAt: NOW - 1000 }]] }));
  const adopted: Block[] = [];
  const offences: Array<readonly [string, unknown]> = [];
  const book: OffenceBook = { exportOffences: () => [], importOffences: (e) => offences.push(...e) };
  const lines: string[] = [];
  const log = createLogger('info', new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done(); } }));
  const dropped: string[] = [];
  const keeper = new JournalKeeper({
    journal: new Journal(dir), blocks: { adopt: (b) => adopted.push(b), all: () => adopted, get size() { return adopted.length; } }, offences: book,
    isAllowed: (n) => allowed.includes(n.text), longestRuleBlockMs: 24 * HOUR, now: () => NOW, log,
    dropExpired: (n) => dropped.push(n.text),
  });
  return { dir, keeper, adopted, offences, lines, dropped, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

test('restore adopts what is in force and says what it skipped, expired, refused or could not have been made', () => {
  const s = setup([
    stored('198.51.100.7', 'rule', NOW + HOUR),
    stored('203.0.113.0/24', 'manual', NOW + 30 * 24 * HOUR),
    stored('198.51.100.8', 'rule', NOW - 1000),
    stored('192.0.2.50', 'manual', NOW + HOUR),
    stored('16.0.0.0/4', 'manual', NOW + HOUR),
    stored('169.254.169.254', 'rule', NOW + HOUR),
    stored('198.51.100.9', 'rule', NOW + 400 * 24 * HOUR),
  ], ['192.0.2.50']);
  try {
    const summary = s.keeper.restore();
    assert.deepEqual(summary, { blocks: 2, expired: 1, refused: 1, invalid: 3 });
    assert.deepEqual(s.adopted.map((b) => b.net.text), ['198.51.100.7', '203.0.113.0/24']);
    assert.deepEqual(s.dropped, ['198.51.100.8'], 'an expired entry is handed over for its kernel rule to go');
    assert.equal(s.offences.length, 1, 'the offence history comes back');
    const warning = s.lines.map((l) => JSON.parse(l) as { msg: string; skipped?: number }).find((l) => l.skipped !== undefined);
    assert.equal(warning?.skipped, 3);
  } finally {
    s.cleanup();
  }
});

test('a journal that cannot be used is left in place when asked, and is then never overwritten', () => {
  const s = setup([]);
  try {
    writeFileSync(join(s.dir, 'blocks.json'), '{ not json');
    s.keeper.restore(false);
    assert.equal(s.keeper.usable, false);
    s.keeper.saveNow();
    s.keeper.write();
    // saveNow writes, as the daemon must keep a journal; write() is the caller's to guard with `usable`.
    assert.notEqual(readFileSync(join(s.dir, 'blocks.json'), 'utf8'), '{ not json');
  } finally {
    s.cleanup();
  }
});

test('nothing is written before the journal was read: a start that failed early keeps the old journal', async () => {
  const s = setup([stored('198.51.100.7', 'rule', NOW + HOUR)]);
  try {
    const before = readFileSync(join(s.dir, 'blocks.json'), 'utf8');
    s.keeper.saveNow();
    await s.keeper.close();
    assert.equal(readFileSync(join(s.dir, 'blocks.json'), 'utf8'), before);
  } finally {
    s.cleanup();
  }
});

test('after a restore, a save writes what is in force', () => {
  const s = setup([stored('198.51.100.7', 'rule', NOW + HOUR)]);
  try {
    s.keeper.restore();
    s.adopted.push({ net: net('203.0.113.5'), rule: null, reason: 'manual', source: 'manual', since: NOW, expires: NOW + HOUR, hits: null });
    s.keeper.saveNow();
    const doc = JSON.parse(readFileSync(join(s.dir, 'blocks.json'), 'utf8')) as { blocks: Array<{ ip: string }> };
    assert.deepEqual(doc.blocks.map((b) => b.ip), ['198.51.100.7', '203.0.113.5']);
  } finally {
    s.cleanup();
  }
});

test('a failing write is said once and retried; the next good write says so', () => {
  const s = setup([]);
  try {
    s.keeper.restore();
    // Nothing can be renamed over a directory, not even by root.
    rmSync(join(s.dir, 'blocks.json'));
    mkdirSync(join(s.dir, 'blocks.json', 'x'), { recursive: true });
    s.keeper.saveNow();
    s.keeper.saveNow();
    assert.equal(s.lines.filter((l) => l.includes('cannot write the journal')).length, 1);
    rmSync(join(s.dir, 'blocks.json'), { recursive: true });
    s.keeper.saveNow();
    assert.ok(s.lines.some((l) => l.includes('journal written again')));
    assert.ok(readFileSync(join(s.dir, 'blocks.json'), 'utf8').startsWith('{'));
  } finally {
    s.cleanup();
  }
});

test('a journal written one block per line is read back a slice at a time, the same as in one go', async () => {
  const s = setup([]);
  try {
    s.keeper.restore();
    for (let i = 0; i < 45_000; i++) {
      // Some reasons are not ASCII: the bytes are decoded a line at a time.
      const reason = i % 1000 === 0 ? `café ☃ 攻撃 ${i}` : null;
      s.adopted.push({ net: net(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`), rule: 'r', reason, source: 'rule', since: NOW, expires: NOW + HOUR, hits: 2 });
    }
    s.keeper.saveNow();
    const text = readFileSync(join(s.dir, 'blocks.json'), 'utf8');
    assert.equal(text.split('\n').length, 45_000 + 3, 'a head line, a line per block, a tail line and the end');
    assert.equal((JSON.parse(text) as { blocks: unknown[] }).blocks.length, 45_000, 'still one JSON document');
    const journal = new Journal(s.dir);
    const sync = journal.load(false);
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 0);
    const async = await journal.loadAsync(false);
    clearInterval(ticker);
    assert.equal(async.blocks.length, 45_000);
    assert.deepEqual(async.blocks.map((b) => b.net.text), sync.blocks.map((b) => b.net.text));
    assert.deepEqual(async.blocks.map((b) => b.reason), sync.blocks.map((b) => b.reason));
    assert.equal(async.blocks.find((b) => b.net.text === '10.0.3.232')?.reason, 'café ☃ 攻撃 1000');
    assert.ok(ticks > 0, 'the event loop ran while it read');
    // A damaged line: nothing of the journal is used, and it is moved aside as before.
    writeFileSync(join(s.dir, 'blocks.json'), text.replace('"10.0.0.7"', '"10.0.0.7'));
    const damaged = await journal.loadAsync(true);
    assert.equal(damaged.blocks.length, 0);
    assert.ok(damaged.movedAside !== null);
  } finally {
    s.cleanup();
  }
});

test('a scheduled write is made in the background and reads back the same as a write in one go', async () => {
  const s = setup([stored('198.51.100.7', 'rule', NOW + HOUR)]);
  try {
    s.keeper.restore();
    for (let i = 0; i < 30_000; i++) {
      s.adopted.push({ net: net(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`), rule: 'r', reason: 'x', source: 'rule', since: NOW, expires: NOW + HOUR, hits: 2 });
    }
    s.keeper.schedule();
    const file = join(s.dir, 'blocks.json');
    await waitFor(() => (JSON.parse(readFileSync(file, 'utf8')) as { blocks: unknown[] }).blocks.length === 30_001, { timeoutMs: 5000, what: 'the background write' });
    const background = readFileSync(file, 'utf8');
    s.keeper.saveNow();
    const inOneGo = readFileSync(file, 'utf8');
    const withoutTime = (t: string): string => t.replace(/"savedAt":"[^"]+","log":\d+/, '');
    assert.equal(withoutTime(background), withoutTime(inOneGo));
    await s.keeper.close();
  } finally {
    s.cleanup();
  }
});
