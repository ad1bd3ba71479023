import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describe as say, RatedError } from '../../src/errors.js';

test('describe gives the first line of the message and of each cause, each once', () => {
  const disk = Object.assign(new Error('ENOSPC: no space left on device, write\n    at writeSync'), { code: 'ENOSPC' });
  const err = new RatedError('STATE_FAILED', 'cannot write the journal', { cause: disk });
  assert.equal(say(err), 'cannot write the journal: ENOSPC: no space left on device, write');
  assert.equal(say(new Error('nft: Could not process rule', { cause: new Error('Could not process rule') })), 'nft: Could not process rule');
  assert.equal(say('plain'), 'plain');
  const loop: Error & { cause?: unknown } = new Error('a');
  loop.cause = loop;
  assert.equal(say(loop), 'a');
});
