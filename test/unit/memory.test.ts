// The memory settler: a full collection after a burst, on a quiet loop only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemorySettler } from '../../src/memory.js';

const MB = 1024 * 1024;

test('a full collection runs once the heap has grown by 32 MB and the loop is quiet, never while it is busy', () => {
  let heap = 40 * MB;
  let busy = 0.9;
  let runs = 0;
  const s = new MemorySettler({ everyMs: 3_600_000, gc: () => { runs++; heap = 60 * MB; }, heapUsed: () => heap, busy: () => busy });
  try {
    s.look();
    assert.equal(runs, 0, 'not during a burst');
    busy = 0.05;
    s.look();
    assert.equal(runs, 1, 'once it is quiet: 40 MB grown since nothing');
    heap = 80 * MB;
    s.look();
    assert.equal(runs, 1, '20 MB more than what the last collection kept is not worth one');
    heap = 95 * MB;
    s.look();
    assert.equal(runs, 2);
    assert.equal(s.collections, 2);
  } finally {
    s.close();
  }
});

test('V8\'s own collection is found and runs', () => {
  const s = new MemorySettler({ everyMs: 3_600_000, busy: () => 0, heapUsed: () => 64 * MB });
  try {
    s.look();
    assert.equal(s.collections, 1);
  } finally {
    s.close();
  }
});
