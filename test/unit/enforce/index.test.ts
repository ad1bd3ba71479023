import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configSchema } from '../../../src/config/schema.js';
import { AUTO_ORDER, selectBackend } from '../../../src/enforce/index.js';
import type { CommandResult, Runner } from '../../../src/run-command.js';
import { RatedError } from '../../../src/errors.js';

const firewall = (backend: string) => configSchema.parse({ firewall: { backend } }).firewall;

/** A runner on which the tools in `usable` work and every other one is refused. */
function host(usable: readonly string[]): { runner: Runner; ran: string[] } {
  const ran: string[] = [];
  const runner: Runner = async (file): Promise<CommandResult> => {
    ran.push(file);
    return usable.includes(file)
      ? { exitCode: 0, stdout: '', stderr: '' }
      : { exitCode: 1, stdout: '', stderr: `${file} v1.0: Operation not permitted\n` };
  };
  return { runner, ran };
}

test('auto tries nftables, then ipset, then iptables', () => {
  assert.deepEqual(AUTO_ORDER, ['nftables', 'ipset', 'iptables']);
});

test('auto picks nftables when nft works', async () => {
  const { runner } = host(['nft', 'ipset', 'iptables', 'ip6tables', 'iptables-restore', 'ip6tables-restore']);
  assert.equal((await selectBackend(firewall('auto'), runner, false)).kind, 'nftables');
});

test('auto picks ipset without nft, and iptables without ipset', async () => {
  const xt = ['iptables', 'ip6tables', 'iptables-restore', 'ip6tables-restore'];
  assert.equal((await selectBackend(firewall('auto'), host(['ipset', ...xt]).runner, false)).kind, 'ipset');
  const { runner, ran } = host(xt);
  assert.equal((await selectBackend(firewall('auto'), runner, false)).kind, 'iptables');
  assert.deepEqual(ran.slice(0, 2), ['nft', 'ipset']);
});

test('ipset needs ip6tables too: without it, auto falls through to the error', async () => {
  const err = await selectBackend(firewall('auto'), host(['ipset', 'iptables']).runner, false).catch((e: unknown) => e);
  assert.ok(err instanceof RatedError);
  assert.equal(err.code, 'FIREWALL_UNUSABLE');
  assert.equal(err.exitCode, 1);
  assert.match(err.message, /^no usable firewall backend \(nftables: .*; ipset: ip6tables: Operation not permitted .*; iptables: .*\); .*--dry-run$/);
  assert.doesNotMatch(err.message, /\n/);
});

test('an explicit backend is probed alone; --dry-run and backend dry-run need nothing', async () => {
  const { runner, ran } = host(['ipset', 'iptables', 'ip6tables']);
  assert.equal((await selectBackend(firewall('ipset'), runner, false)).kind, 'ipset');
  assert.ok(!ran.includes('nft'));
  const none = host([]);
  assert.equal((await selectBackend(firewall('iptables'), none.runner, true)).kind, 'dry-run');
  assert.equal((await selectBackend(firewall('dry-run'), none.runner, false)).kind, 'dry-run');
  assert.deepEqual(none.ran, []);
});
