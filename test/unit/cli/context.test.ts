// The CLI's plumbing without a daemon: the configuration read once per
// command, the daemon-down fallback, the offline path on the dry-run
// backend, and what the block table prints.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockView } from '../../../src/block.js';
import { api, configOf, daemonOrKernel } from '../../../src/cli/context.js';
import { blocksTable, printable, remaining } from '../../../src/cli/format.js';
import { offline } from '../../../src/cli/offline.js';
import { RatedError } from '../../../src/errors.js';

function scratch(yaml: string): { dir: string; config: string } {
  const dir = mkdtempSync(join(tmpdir(), 'rated-cli-'));
  const config = join(dir, 'rated.yml');
  writeFileSync(config, yaml, { mode: 0o600 });
  return { dir, config };
}

test('one command reads its configuration once, however many parts ask', async () => {
  const { dir, config } = scratch(`control: { socket: /tmp/a.sock }\n`);
  try {
    const args = { config };
    const first = await configOf(args);
    writeFileSync(config, 'control: { socket: /tmp/b.sock }\n');
    assert.equal(await configOf(args), first, 'the same load');
    assert.equal((await configOf({ config })).config.control.socket, '/tmp/b.sock', 'another command reads the file anew');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('with no daemon on the socket, the daemon-down path runs with the configuration; other errors pass through', async () => {
  const { dir, config } = scratch('firewall: { backend: dry-run }\n');
  try {
    const args = { config, socket: join(dir, 'none.sock') };
    const got = await daemonOrKernel(args, async () => (await api(args, 'GET', '/status')).body, async (c) => `down: ${c.firewall.backend}`);
    assert.equal(got, 'down: dry-run');
    await assert.rejects(
      daemonOrKernel(args, async () => { throw new RatedError('REFUSED', 'no'); }, async () => 'down'),
      (err: RatedError) => err.code === 'REFUSED',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('offline decisions go through the same Operator: refusals, the IPv6 client key, a flush', async () => {
  const { dir, config } = scratch('firewall: { backend: dry-run }\nallow: [192.0.2.0/24]\n');
  try {
    const c = (await configOf({ config })).config;
    await assert.rejects(offline(c, true, (op) => op.block({ ip: '192.0.2.9' })), (err: RatedError) => err.code === 'REFUSED');
    await assert.rejects(offline(c, true, (op) => op.block({ ip: '10.0.0.0/7' })), (err: RatedError) => err.code === 'USAGE');
    const r = await offline(c, true, async (op) => {
      await op.block({ ip: '2001:db8:1:2::/64', for: '1h' });
      const lifted = await op.unblock('2001:db8:1:2::77');
      return { lifted: lifted?.ip, flushed: await op.flush() };
    });
    assert.deepEqual(r, { lifted: '2001:db8:1:2::/64', flushed: 0 }, 'an address stands for its /64');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the block table prints every column, and nothing a reason could use to drive the terminal', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  const b: BlockView = {
    ip: '203.0.113.7', rule: 'default', reason: 'bad\u001b[2Jreason', source: 'rule', since: '2026-01-01T00:00:00.000Z',
    expires: '2026-01-01T06:00:00.000Z', hits: 361, dropped: { packets: 1520, bytes: 91_200 },
  };
  const text = blocksTable([b], now);
  assert.match(text, /^IP +SOURCE +RULE +HITS +SINCE +EXPIRES +DROPPED +REASON$/m);
  assert.match(text, /203\.0\.113\.7 +rule +default +361 +2026-01-01 00:00:00Z +2026-01-01 06:00:00Z \(6h0m\) +1520 pkts 89\.1 KiB +bad\\u001b\[2Jreason/);
  assert.match(text, /1 active block$/);
  assert.equal(blocksTable([], now), 'No active blocks.');
  assert.equal(printable('a\u202eb'), 'a\\u202eb');
  assert.equal(remaining(0), 'now');
  assert.equal(remaining(90_000), '1m30s');
  assert.equal(remaining(26 * 3_600_000), '1d2h');
});
