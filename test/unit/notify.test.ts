import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { notifyServiceManager } from '../../src/notify.js';

// A stand-in for systemd-notify that records its arguments, or fails like
// the real one does when no service manager listens.
describe('notifyServiceManager', () => {
  let dir = '';
  let record = '';
  const env = (bin: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv => ({ PATH: bin, ...extra });

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'rated-notify-'));
    record = join(dir, 'args');
    for (const [name, body] of [
      ['ok', `#!/bin/sh\nfor a in "$@"; do printf '%s\\n' "$a"; done >"${record}"\n`],
      ['fail', '#!/bin/sh\necho "Failed to notify init system: Permission denied" >&2\nexit 1\n'],
    ] as const) {
      mkdirSync(join(dir, name));
      writeFileSync(join(dir, name, 'systemd-notify'), body, { mode: 0o755 });
    }
    mkdirSync(join(dir, 'none'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('outside systemd (no NOTIFY_SOCKET) it does nothing', async () => {
    rmSync(record, { force: true });
    const r = await notifyServiceManager({ READY: '1' }, { env: env(join(dir, 'ok')) });
    assert.deepEqual(r, { sent: false, managed: false, reason: 'NOTIFY_SOCKET is not set' });
    assert.equal(existsSync(record), false, 'systemd-notify was not run');
  });

  test('under systemd it hands every field to systemd-notify, one argument each, line breaks flattened', async () => {
    const r = await notifyServiceManager({ READY: '1', STATUS: 'protecting\nwith nftables' }, {
      env: env(join(dir, 'ok'), { NOTIFY_SOCKET: '/run/systemd/notify' }),
    });
    assert.deepEqual(r, { sent: true });
    assert.equal(readFileSync(record, 'utf8'), 'READY=1\nSTATUS=protecting with nftables\n');
  });

  test('a refusal is reported with systemd-notify\'s first line, never thrown', async () => {
    const r = await notifyServiceManager({ READY: '1' }, { env: env(join(dir, 'fail'), { NOTIFY_SOCKET: '/run/systemd/notify' }) });
    assert.deepEqual(r, { sent: false, managed: true, reason: 'Failed to notify init system: Permission denied' });
  });

  test('without systemd-notify it says so', async () => {
    const r = await notifyServiceManager({ READY: '1' }, { env: env(join(dir, 'none'), { NOTIFY_SOCKET: '/run/systemd/notify' }) });
    assert.deepEqual(r, { sent: false, managed: true, reason: 'systemd-notify is not installed' });
  });
});
