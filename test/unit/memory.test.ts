// The memory settler: a full collection after a burst, on a quiet loop only;
// a compacting one when the heap holds much more than it uses and the loop is idle.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemorySettler } from '../../src/memory.js';

const MB = 1024 * 1024;

test('a full collection runs once the heap has grown by 16 MB (or an eighth) and the loop is quiet, never while it is busy', () => {
  let heap = 40 * MB;
  let busy = 0.9;
  let runs = 0;
  const s = new MemorySettler({
    everyMs: 3_600_000, gc: () => { runs++; heap = 60 * MB; }, heap: () => ({ used: heap, total: heap + 8 * MB }), busy: () => busy,
  });
  try {
    s.look();
    assert.equal(runs, 0, 'not during a burst');
    busy = 0.05;
    s.look();
    assert.equal(runs, 1, 'once it is quiet: 40 MB grown since nothing');
    heap = 70 * MB;
    s.look();
    assert.equal(runs, 1, '10 MB more than what the last collection kept is not worth one');
    heap = 95 * MB;
    s.look();
    assert.equal(runs, 2);
    assert.equal(s.collections, 2);
    assert.equal(s.compactions, 0, 'the heap held little room: nothing to compact away');
  } finally {
    s.close();
  }
});

test('a heap that holds more without using more (the young generation after a burst) is collected once the loop is idle', () => {
  const used = 60 * MB;
  let total = 70 * MB;
  let busy = 0.01;
  let runs = 0;
  const s = new MemorySettler({
    everyMs: 3_600_000, gc: () => { runs++; total = 62 * MB; }, heap: () => ({ used, total }), busy: () => busy,
  });
  try {
    s.look();
    assert.equal(runs, 1, 'the first look on an idle loop');
    total = 93 * MB;
    busy = 0.2;
    s.look();
    assert.equal(runs, 1, 'traffic goes on: what is in use has not grown, so nothing yet');
    busy = 0.01;
    s.look();
    assert.equal(runs, 2, 'idle: 31 MB more held than after the last collection');
    s.look();
    assert.equal(runs, 2, 'and not again');
    assert.equal(s.compactions, 0);
  } finally {
    s.close();
  }
});

test('room V8 keeps after the collections that follow a burst gets one more collection on an idle loop, and only one', () => {
  let used = 160 * MB;
  let total = 170 * MB;
  let busy = 0.1;
  const runs: string[] = [];
  const s = new MemorySettler({
    everyMs: 3_600_000,
    gc: (compact) => {
      runs.push(compact ? 'compact' : 'plain');
      used = 56 * MB;
      // The young generation (32 MB) is given back by the third collection only.
      total = runs.length < 3 ? 89 * MB : 58 * MB;
    },
    heap: () => ({ used, total }),
    busy: () => busy,
  });
  try {
    s.look();
    assert.deepEqual(runs, ['plain'], 'after the burst');
    busy = 0.01;
    s.look();
    assert.deepEqual(runs, ['plain', 'compact']);
    s.look();
    assert.deepEqual(runs, ['plain', 'compact', 'plain'], '33 MB held and unused: one more');
    total = 89 * MB;
    s.look();
    s.look();
    assert.deepEqual(runs, ['plain', 'compact', 'plain', 'plain'], 'held grew by 31 MB: one more, then no more while nothing changes');
  } finally {
    s.close();
  }
});

test('room left after a collection is compacted away once, when the loop is idle', () => {
  let used = 500 * MB;
  let total = 520 * MB;
  let busy = 0.1;
  const runs: boolean[] = [];
  const s = new MemorySettler({
    everyMs: 3_600_000,
    gc: (compact) => {
      runs.push(compact);
      used = 290 * MB;
      total = compact ? 300 * MB : 500 * MB;
    },
    heap: () => ({ used, total }),
    busy: () => busy,
  });
  try {
    s.look();
    assert.deepEqual(runs, [false], 'a quiet loop: a plain collection, which leaves 210 MB held and unused');
    s.look();
    assert.deepEqual(runs, [false], 'traffic goes on (10% busy): no compaction, which holds the loop longer');
    busy = 0.01;
    s.look();
    assert.deepEqual(runs, [false, true], 'idle: one compacting collection');
    s.look();
    assert.deepEqual(runs, [false, true], 'and not again: the room is gone and the heap has not grown');
    assert.equal(s.compactions, 1);
  } finally {
    s.close();
  }
});

test('no collection while blocks are being made or lifted: it would hold a new offender\'s block', () => {
  let decisions = 0;
  let runs = 0;
  const s = new MemorySettler({
    everyMs: 3_600_000, gc: () => { runs++; }, heap: () => ({ used: 200 * MB, total: 210 * MB }), busy: () => 0.01, decisions: () => decisions,
  });
  try {
    decisions = 3;
    s.look();
    assert.equal(runs, 0, 'blocks were made since the last look');
    s.look();
    assert.equal(runs, 1, 'none since: the collection runs');
  } finally {
    s.close();
  }
});

test('V8\'s own collections are found and run, plain and compacting', () => {
  let compacted = false;
  const s = new MemorySettler({
    everyMs: 3_600_000, busy: () => 0,
    heap: () => (compacted ? { used: 64 * MB, total: 70 * MB } : { used: 64 * MB, total: 200 * MB }),
    onCollected: (c) => { compacted ||= c.compacted; },
  });
  try {
    s.look();
    assert.equal(s.collections, 1);
    s.look();
    assert.equal(s.compactions, 1, 'V8 took the flag for one collection');
  } finally {
    s.close();
  }
});
