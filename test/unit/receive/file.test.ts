// The file receiver on real files in a temporary directory: no root needed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, copyFileSync, mkdirSync, mkdtempSync, openSync, closeSync, renameSync, rmSync, truncateSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { FileReceiver } from '../../../src/receive/file.js';
import { Metrics } from '../../../src/metrics.js';
import { waitFor } from '../../helpers/wait-for.js';

const quiet = pino({ level: 'silent' });

/** A receiver on one file, recording the uri of every hit (each test line has a unique one). */
function follow(path: string, opts: { drainMs?: number } = {}) {
  const metrics = new Metrics({ activeBlocks: () => 0, trackedClients: () => 0 });
  const uris: string[] = [];
  const receiver = new FileReceiver({
    paths: [path], metrics, log: quiet, pollMs: 100, drainMs: opts.drainMs ?? 1000,
    sink: (hit) => {
      uris.push(hit.uri ?? '');
      return 'counted';
    },
  });
  return { receiver, metrics, uris };
}

const line = (n: number): string => `192.0.2.1 GET 200 h /${n}\n`;
const lines = (from: number, to: number): string => {
  let s = '';
  for (let i = from; i < to; i++) s += line(i);
  return s;
};
const expect = (from: number, to: number): string[] => Array.from({ length: to - from }, (_, i) => `/${from + i}`);

describe('FileReceiver', () => {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'rated-files-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('starts at the end: lines written before start are not read; a partial last line is skipped', async () => {
    const path = join(dir, 'start.log');
    writeFileSync(path, `${lines(0, 5)}192.0.2.1 GET 200 h /partial`);
    const f = follow(path);
    await f.receiver.start();
    try {
      appendFileSync(path, `-rest\n${lines(5, 8)}`);
      await waitFor(() => f.uris.length >= 3, { what: 'three lines' });
      await f.receiver.settle();
      assert.deepEqual(f.uris, expect(5, 8));
      assert.equal(f.metrics.received.get('files'), 3);
    } finally {
      await f.receiver.close();
    }
  });

  test('partial lines wait for their newline', async () => {
    const path = join(dir, 'partial.log');
    writeFileSync(path, '');
    const f = follow(path);
    await f.receiver.start();
    try {
      appendFileSync(path, '192.0.2.1 GET 200 h');
      await f.receiver.settle();
      assert.deepEqual(f.uris, []);
      appendFileSync(path, ' /0\n192.0.2.1 GET ');
      await waitFor(() => f.uris.length >= 1);
      appendFileSync(path, '200 h /1\n');
      await waitFor(() => f.uris.length >= 2);
      assert.deepEqual(f.uris, ['/0', '/1']);
    } finally {
      await f.receiver.close();
    }
  });

  test('a file that does not exist yet (nor its directory) is read from its start once it appears', async () => {
    const sub = join(dir, 'later');
    const path = join(sub, 'access.log');
    const f = follow(path);
    await f.receiver.start();
    try {
      assert.equal(f.receiver.status()[0]?.state, 'waiting');
      mkdirSync(sub);
      writeFileSync(path, lines(0, 4));
      await waitFor(() => f.uris.length >= 4, { what: 'four lines' });
      assert.deepEqual(f.uris, expect(0, 4));
      assert.equal(f.receiver.status()[0]?.state, 'following');
    } finally {
      await f.receiver.close();
    }
  });

  test('rotation by rename: the old file is read to its end (also what is written to it after the rename), the new one from its start', async () => {
    const path = join(dir, 'rename.log');
    writeFileSync(path, '');
    const f = follow(path);
    await f.receiver.start();
    try {
      // A writer holding the file open, like nginx before it reopens its logs.
      const old = openSync(path, 'a');
      writeSync(old, lines(0, 100));
      renameSync(path, `${path}.1`);
      writeSync(old, lines(100, 150));
      writeFileSync(path, '');
      writeSync(old, lines(150, 200));
      closeSync(old);
      appendFileSync(path, lines(200, 300));
      await waitFor(() => f.uris.length >= 300, { what: '300 lines', timeoutMs: 5000 });
      await f.receiver.settle();
      assert.deepEqual([...f.uris].sort(), expect(0, 300).sort(), 'every line once');
      assert.equal(f.metrics.received.get('files'), 300);
      assert.equal(f.metrics.rotations.get('rename'), 1);
    } finally {
      await f.receiver.close();
    }
  });

  test('rotation by copytruncate: read again from 0, nothing twice', async () => {
    const path = join(dir, 'copytruncate.log');
    writeFileSync(path, '');
    const f = follow(path);
    await f.receiver.start();
    try {
      appendFileSync(path, lines(0, 100));
      await waitFor(() => f.uris.length >= 100);
      copyFileSync(path, `${path}.1`);
      truncateSync(path, 0);
      appendFileSync(path, lines(100, 120));
      await waitFor(() => f.uris.length >= 120, { what: '120 lines' });
      await f.receiver.settle();
      assert.deepEqual(f.uris, expect(0, 120));
      assert.equal(f.metrics.rotations.get('truncate'), 1);
    } finally {
      await f.receiver.close();
    }
  });

  test('copytruncate noticed even when the file grew back past the old position before the next read', async () => {
    const path = join(dir, 'regrown.log');
    writeFileSync(path, '');
    const f = follow(path);
    await f.receiver.start();
    try {
      appendFileSync(path, lines(0, 10));
      await waitFor(() => f.uris.length >= 10);
      await f.receiver.settle();
      // Stop following for a moment: close, truncate, grow past the old size, reopen the same receiver state.
      truncateSync(path, 0);
      appendFileSync(path, lines(1000, 1020));
      await waitFor(() => f.uris.length >= 30, { what: '30 lines' });
      await f.receiver.settle();
      assert.deepEqual(f.uris, [...expect(0, 10), ...expect(1000, 1020)]);
    } finally {
      await f.receiver.close();
    }
  });

  test('the file deleted and created again', async () => {
    const path = join(dir, 'deleted.log');
    writeFileSync(path, '');
    const f = follow(path, { drainMs: 200 });
    await f.receiver.start();
    try {
      appendFileSync(path, lines(0, 3));
      await waitFor(() => f.uris.length >= 3);
      unlinkSync(path);
      await waitFor(() => f.receiver.status()[0]?.state === 'waiting', { what: 'waiting' });
      writeFileSync(path, lines(3, 6));
      await waitFor(() => f.uris.length >= 6);
      assert.deepEqual(f.uris, expect(0, 6));
      await waitFor(() => f.receiver.status()[0]?.draining === 0, { what: 'the old file closed' });
    } finally {
      await f.receiver.close();
    }
  });

  test('rejected lines are counted per reason', async () => {
    const path = join(dir, 'bad.log');
    writeFileSync(path, '');
    const f = follow(path);
    await f.receiver.start();
    try {
      appendFileSync(path, 'garbage\n010.1.1.1 GET 200 h /\n\0\0\0\n192.0.2.1 GET 200 h /ok\n');
      await waitFor(() => f.uris.length >= 1);
      await f.receiver.settle();
      assert.equal(f.metrics.rejected.get('files\tbad-address'), 2);
      assert.equal(f.metrics.rejected.get('files\tbinary'), 1);
      assert.equal(f.metrics.received.get('files'), 1);
    } finally {
      await f.receiver.close();
    }
  });
});
