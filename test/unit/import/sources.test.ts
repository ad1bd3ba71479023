import { test } from 'node:test';
import assert from 'node:assert/strict';
import { detectFormat, goDuration, ImportReader } from '../../../src/import/sources.js';

const src = (text: string, name = 'list.txt') => ({ name, bytes: Buffer.from(text) });

test('Go durations as CrowdSec prints them', () => {
  assert.equal(goDuration('3h59m50.5s'), (3 * 3600 + 59 * 60 + 50.5) * 1000);
  assert.equal(goDuration('30m0s'), 1_800_000);
  assert.equal(goDuration('-5m3s'), -303_000);
  assert.equal(goDuration('150ms'), 150);
  assert.equal(goDuration('0'), 0);
  for (const bad of ['', '1d', 'h', '3 h', '1h-2m']) assert.equal(goDuration(bad), null, bad);
});

test('the format is told from the first bytes; binary that is none of them is refused by name', () => {
  assert.equal(detectFormat(src('# list\n192.0.2.1\n')), 'list');
  assert.equal(detectFormat(src('[{"id":1,"decisions":[]}]')), 'crowdsec');
  assert.equal(detectFormat(src('null\n')), 'crowdsec');
  assert.equal(detectFormat(src('[\n{"ip":"192.0.2.1","rule":null,"source":"manual"}\n]')), 'rated');
  assert.equal(detectFormat({ name: 'db', bytes: Buffer.concat([Buffer.from('SQLite format 3\0'), Buffer.alloc(84)]) }), 'fail2ban');
  assert.throws(() => detectFormat({ name: 'a.out', bytes: Buffer.from([0x7f, 0x45, 0, 1]) }), /a\.out: not a format rated imports/);
});

test('a list: comments, trailing text, CIDR, duplicates merged (the longest time wins), invalid lines counted with where', async () => {
  const r = new ImportReader({ now: 0 });
  await r.read(src('; header\n192.0.2.1 ; SBL1\n192.0.2.0/24\t# net\n\n192.0.2.001\n2001:DB8::1 text\nnonsense\n10.0.0.0/1\n'), 'list');
  assert.deepEqual(r.entries().map((e) => e.ip), ['192.0.2.1', '192.0.2.0/24', '2001:db8::1']);
  assert.equal(r.result.duplicates, 0);
  assert.deepEqual(r.result.skipped, { invalid: 3 });
  assert.match(r.result.examples[0] ?? '', /list\.txt:5: "192\.0\.2\.001"/);
  assert.equal(r.entries()[0]?.reason, 'imported from list.txt');
  const j = new ImportReader({ now: Date.parse('2026-01-01T00:00:00Z'), reason: 'moved' });
  await j.read(src(JSON.stringify([
    { ip: '192.0.2.1', source: 'rule', expires: '2026-01-01T01:00:00Z', reason: 'flood' },
    { ip: '192.0.2.1', source: 'rule', expires: '2026-01-01T02:00:00Z', reason: 'flood' },
    { ip: '192.0.2.2', source: 'manual', expires: '2025-12-31T00:00:00Z', reason: null },
    { ip: '192.0.2.3', source: 'manual', expires: null, reason: null },
  ])), 'auto');
  assert.deepEqual(j.entries(), [{ ip: '192.0.2.1', seconds: 7200, reason: 'moved' }, { ip: '192.0.2.3', seconds: null, reason: 'moved' }]);
  assert.equal(j.result.duplicates, 1);
  assert.deepEqual(j.result.skipped, { expired: 1 });
});
