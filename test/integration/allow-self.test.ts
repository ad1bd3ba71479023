// allowSelf follows this host's addresses while rated runs: an address added
// to an interface later (a new VIP, a failover address) is never blocked, and
// a block that holds one is lifted at the next check or SIGHUP.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { callApi } from '../../src/control/client.js';
import { kernelSets } from '../helpers/kernel-set.js';
import { createNamespace, type Namespace } from '../helpers/netns.js';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { MAIN_JS, startRated, type Rated } from '../helpers/rated.js';
import { waitFor } from '../helpers/wait-for.js';

const TOOLS = ['ip', 'nft', 'curl'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;
const PORT = 8080;

describe('allowSelf follows address changes', { skip: SKIP }, () => {
  let srv: Namespace;
  let dir = '';
  let socket = '';
  let rated: Rated | null = null;

  before(async () => {
    assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first`);
    dir = mkdtempSync(join(tmpdir(), 'rated-self-'));
    socket = join(dir, 'rated.sock');
    srv = await createNamespace('rtself');
    const config = join(dir, 'rated.yml');
    writeFileSync(config, [
      `receivers: { http: { address: 127.0.0.1, port: ${PORT} }, udp: null }`,
      'rules: [{ name: r, limit: 2, window: 60s, block: 10m }]',
      `control: { socket: ${socket} }`,
      `state: { dir: ${join(dir, 'state')} }`,
      '',
    ].join('\n'));
    rated = await startRated({ namespace: srv, config, socket });
  });

  after(async () => {
    await rated?.stop();
    await srv?.delete();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const notify = async (ip: string, n: number): Promise<void> => {
    for (let i = 0; i < n; i++) {
      const r = await srv.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', `X-IP: ${ip}`, `http://127.0.0.1:${PORT}/`]);
      assert.equal(r.stdout, '204');
    }
  };
  const listed = async (): Promise<string[]> => ((await callApi(socket, 'GET', '/blocks')).body as Array<{ ip: string }>).map((b) => b.ip);

  test('an address added after start is never blocked: not by a rule, not by rated block', async () => {
    assert.ok(rated);
    // A control: an address that is not ours is blocked by the same traffic.
    await notify('198.51.100.30', 3);
    await waitFor(async () => (await listed()).includes('198.51.100.30'), { what: 'the control offender to be blocked' });

    await srv.run('ip', ['addr', 'add', '192.0.2.77/32', 'dev', 'lo']);
    await notify('192.0.2.77', 5);
    const cli = await rated.cli(['block', '192.0.2.77']);
    assert.equal(cli.code, 1, `${cli.stdout}${cli.stderr}`);
    assert.match(cli.stderr, /allow-listed/);
    assert.ok(!(await listed()).includes('192.0.2.77'), 'not listed');
    assert.ok(!(await kernelSets(srv)).v4.includes('192.0.2.77'), 'not in the kernel');
  });

  test('a block that holds an address the host takes later is lifted at the next check (SIGHUP)', async () => {
    assert.ok(rated);
    const b = await rated.cli(['block', '203.0.113.0/24', '--for', '1h']);
    assert.equal(b.code, 0, b.stderr);
    await srv.run('ip', ['addr', 'add', '203.0.113.9/32', 'dev', 'lo']);
    process.kill(rated.pid, 'SIGHUP');
    await waitFor(async () => !(await listed()).includes('203.0.113.0/24'), { what: 'the /24 holding our new address to be lifted', timeoutMs: 10_000 });
    assert.ok(!(await kernelSets(srv)).v4.includes('203.0.113.0/24'), 'and gone from the kernel');
    assert.ok(rated.lines.some((l) => l.msg === "lifting a block that holds one of this host's own addresses"), rated.output(20));
  });
});
