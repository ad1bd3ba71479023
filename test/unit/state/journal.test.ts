// The journal's file handling against whoever owns state.dir (the `rated`
// user under systemd): a link planted where root writes must never carry the
// write, or a chown, to another file (SPEC §7: files in state.dir are never
// followed through symlinks).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNetwork } from '../../../src/address.js';
import { RatedError } from '../../../src/errors.js';
import { Journal } from '../../../src/state/journal.js';

const ROOT = process.getuid?.() === 0;
const NOBODY = 65534;

function block(ip: string) {
  const net = parseNetwork(ip);
  assert.ok(net);
  return { net, rule: 'r', reason: 'x', source: 'rule' as const, since: 1, expires: Date.now() + 60_000, hits: 4 };
}

function scratch(): { root: string; state: string; target: string } {
  const root = mkdtempSync(join(tmpdir(), 'rated-journal-'));
  const state = join(root, 'state');
  mkdirSync(state, { mode: 0o750 });
  const target = join(root, 'passwd');
  writeFileSync(target, 'root:x:0:0:root:/root:/bin/bash\n', { mode: 0o644 });
  return { root, state, target };
}

describe('journal files', () => {
  test('a link planted at the old temporary name or at the journal is replaced, never written through or chowned', { skip: ROOT ? false : 'needs root: the attack is a write by root' }, () => {
    const { root, state, target } = scratch();
    try {
      chownSync(state, NOBODY, NOBODY);
      symlinkSync(target, join(state, 'blocks.json.tmp'));
      symlinkSync(target, join(state, 'blocks.json'));
      new Journal(state).save({ blocks: [block('192.0.2.9')], offences: [] });
      assert.equal(readFileSync(target, 'utf8'), 'root:x:0:0:root:/root:/bin/bash\n', 'the target keeps its content');
      assert.equal(statSync(target).uid, 0, 'the target keeps its owner');
      const written = lstatSync(join(state, 'blocks.json'));
      assert.ok(written.isFile(), 'the journal is a regular file of its own');
      assert.equal(written.uid, NOBODY, "the journal belongs to the directory's owner");
      assert.ok(lstatSync(join(state, 'blocks.json.tmp')).isSymbolicLink(), 'the planted link was not touched');
      assert.deepEqual(readdirSync(state).filter((f) => f.endsWith('.tmp') && f !== 'blocks.json.tmp'), [], 'no temporary file is left');
      assert.deepEqual(new Journal(state).load().blocks.map((b) => b.net.text), ['192.0.2.9']);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test('a journal that is a link is not read; it is moved aside and its target left alone', () => {
    const { root, state, target } = scratch();
    try {
      writeFileSync(target, JSON.stringify({ version: 1, blocks: [{ ip: '198.51.100.1', source: 'manual', expires: Date.now() + 60_000 }] }));
      symlinkSync(target, join(state, 'blocks.json'));
      const loaded = new Journal(state).load();
      assert.deepEqual(loaded.blocks, [], 'nothing is read through the link');
      assert.match(loaded.error ?? '', /symbolic link/);
      assert.ok(loaded.movedAside && lstatSync(loaded.movedAside).isSymbolicLink(), 'the link itself is moved aside');
      assert.match(readFileSync(target, 'utf8'), /198\.51\.100\.1/, 'the target is untouched');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test('a second bad journal does not overwrite the first one moved aside', () => {
    const { root, state } = scratch();
    try {
      const journal = new Journal(state);
      writeFileSync(journal.path, 'first');
      const first = journal.load().movedAside;
      writeFileSync(journal.path, 'second');
      const second = journal.load().movedAside;
      assert.ok(first && second && first !== second);
      assert.equal(readFileSync(first, 'utf8'), 'first');
      assert.equal(readFileSync(second, 'utf8'), 'second');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test('a state dir that is a link, or writable by others, is refused with what to do', () => {
    const { root, state } = scratch();
    try {
      const link = join(root, 'link');
      symlinkSync(state, link);
      assert.throws(() => new Journal(link).save({ blocks: [], offences: [] }),
        (err: unknown) => err instanceof RatedError && err.code === 'STATE_FAILED' && /symbolic link/.test(err.message));
      chmodSync(state, 0o777);
      assert.throws(() => new Journal(state).save({ blocks: [], offences: [] }),
        (err: unknown) => err instanceof RatedError && /writable by others.*chmod go-w/.test(err.message));
      assert.throws(() => new Journal(state).load(), (err: unknown) => err instanceof RatedError && err.code === 'STATE_FAILED');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
