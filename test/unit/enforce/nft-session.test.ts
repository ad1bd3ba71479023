import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NftablesBackend } from '../../../src/enforce/nftables.js';
import { NftSession, SessionUnavailable, takeAnswer } from '../../../src/enforce/nft-session.js';
import { CommandError, type CommandResult, type Runner } from '../../../src/run-command.js';
import { net } from '../../helpers/net.js';

// What nft 1.0.6 writes to its error output in `nft -j -i`, byte for byte.
const MARK = '} rated 0a1b2c3d 7';
const REFUSED_MARK = `Error: syntax error, unexpected '}'\n${MARK}\n^\n`;

test('takeAnswer: nothing before the marker\'s refusal means the document was applied', () => {
  assert.deepEqual(takeAnswer(REFUSED_MARK, MARK), { before: '', rest: '' });
});

test('takeAnswer: what nft said before refusing the marker is the document\'s own answer', () => {
  const said = 'internal:0:0-0: Error: Could not process rule: No such file or directory\n\n';
  assert.deepEqual(takeAnswer(`${said}${REFUSED_MARK}Error: next`, MARK), { before: said, rest: 'Error: next' });
});

test('takeAnswer: an answer not complete yet (the caret line still to come) is not taken', () => {
  assert.equal(takeAnswer(`Error: syntax error, unexpected '}'\n${MARK}\n`, MARK), null);
  assert.equal(takeAnswer("Error: syntax error, unexpected '}'\n} rated 0a1b2c3d 7", MARK), null);
  assert.equal(takeAnswer(REFUSED_MARK, '} rated 0a1b2c3d 8'), null, 'another marker\'s answer is not this one');
});

/** A session whose tool ends at once without answering (`true`), and how often it was started. */
function silentSession(): { session: NftSession; starts: () => number } {
  let starts = 0;
  const session = new NftSession(() => {
    starts++;
    return spawn('true', [], { stdio: ['pipe', 'pipe', 'pipe'] });
  });
  return { session, starts: () => starts };
}

test('a document of more than one line is refused before it is sent: nft would take each line as a transaction of its own', async () => {
  const { session, starts } = silentSession();
  await assert.rejects(session.run('{"nftables":[]}\n{"nftables":[]}'), RangeError);
  assert.equal(starts(), 0);
});

test('a tool that ends without answering cannot hold a session: the change is refused as unavailable, and so is every later one', async () => {
  const { session, starts } = silentSession();
  await assert.rejects(session.run('{"nftables":[]}'), SessionUnavailable);
  assert.equal(session.disabled, true);
  await assert.rejects(session.run('{"nftables":[]}'), SessionUnavailable);
  assert.equal(starts(), 1, 'not started again');
});

test('a session that does not answer in time is killed and the change fails as a timed-out command', async () => {
  const child = spawn('sleep', ['30'], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  const session = new NftSession(() => child, 200);
  const exited = once(child, 'exit');
  await assert.rejects(session.run('{"nftables":[]}'), (err: unknown) => err instanceof CommandError && /did not finish within 200 ms/.test(err.message));
  child.ref();
  assert.deepEqual(await exited, [null, 'SIGKILL']);
  assert.equal(session.disabled, false, 'a hung nft is no reason to stop using sessions');
});

test('the nftables backend sends its change through a process when nft cannot hold a session', async () => {
  const calls: string[][] = [];
  const run = (file: string, args: readonly string[]): Promise<CommandResult> => {
    calls.push([file, ...args]);
    return Promise.resolve({ exitCode: 0, stdout: '', stderr: '' });
  };
  let starts = 0;
  const runner: Runner = Object.assign(run, { start: () => (starts++, spawn('true', [], { stdio: ['pipe', 'pipe', 'pipe'] })) });
  const backend = new NftablesBackend(runner, { table: 'rated', hook: 'input', priority: -10, ipv6Prefix: 64, maxBlocks: 1024 });
  backend.add(net('192.0.2.1'), 60_000, false);
  assert.deepEqual(await backend.commit(), { applied: 1, failed: [] });
  backend.add(net('192.0.2.2'), 60_000, false);
  assert.deepEqual(await backend.commit(), { applied: 1, failed: [] });
  assert.deepEqual(calls, [['nft', '-j', '-f', '-'], ['nft', '-j', '-f', '-']]);
  assert.equal(starts, 1);
  backend.close();
});
