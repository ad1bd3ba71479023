// `rated top` in a real terminal: tmux runs it against the built daemon
// (real nftables, in a namespace) while notifications keep arriving; what
// the screen shows is read with capture-pane, keys are sent with send-keys.
// And `rated top --once` when stdout is not a terminal: plain lines.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanUp } from '../helpers/cleanup.js';
import { createNamespace, type Namespace } from '../helpers/netns.js';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { BIN, ROOT, startRated, type Rated } from '../helpers/rated.js';
import { waitFor } from '../helpers/wait-for.js';

const TOOLS = ['ip', 'nft', 'curl', 'tmux'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;

describe('rated top', { skip: SKIP }, () => {
  let ns: Namespace | undefined;
  let dir = '';
  let rated: Rated | undefined;
  let socket = '';
  let config = '';
  let tmuxSocket = '';
  let load: Promise<void> | undefined;
  let loading = true;

  before(async () => {
    ns = await createNamespace('rtd-top');
    dir = mkdtempSync(join(tmpdir(), 'rated-top-'));
    mkdirSync(join(dir, 'state'), { mode: 0o750 });
    socket = join(dir, 'rated.sock');
    config = join(dir, 'rated.yml');
    tmuxSocket = join(dir, 'tmux.sock');
    writeFileSync(config, [
      'receivers: { http: { address: 127.0.0.1, port: 8080 } }',
      'rules: [{ name: flood, limit: 40, window: 60s, block: 10m }]',
      `control: { socket: ${socket} }`,
      `state: { dir: ${join(dir, 'state')} }`,
      '',
    ].join('\n'));
    rated = await startRated({ namespace: ns, config, socket });
    // Bounded load: 203.0.113.1 climbs towards its limit, 203.0.113.2 crosses it, at most 20 s.
    const until = Date.now() + 20_000;
    load = (async () => {
      let k = 0;
      while (loading && Date.now() < until) {
        const ip = k % 3 === 0 ? '203.0.113.2' : '203.0.113.1';
        if (ip === '203.0.113.1' && k > 45) { k++; continue; }
        await ns.exec('curl', ['-s', '-o', '/dev/null', '-H', `X-IP: ${ip}`, 'http://127.0.0.1:8080/']);
        k++;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
  });

  after(() => cleanUp([
    async () => { loading = false; await load; },
    async () => { await ns?.exec('tmux', ['-S', tmuxSocket, 'kill-server']); },
    () => rated?.stop(), () => ns?.delete(), () => rmSync(dir, { recursive: true, force: true }),
  ]));

  const tmux = (args: readonly string[]) => ns!.exec('tmux', ['-S', tmuxSocket, ...args]);
  const screen = async (): Promise<string> => (await tmux(['capture-pane', '-p', '-t', 'top'])).stdout;

  test('in a terminal: rates, the client nearest its limit, the latest block; keys sort; q quits', async () => {
    const command = [process.execPath, BIN, 'top', '-c', config, '--socket', socket].map((a) => `'${a}'`).join(' ');
    const started = await tmux(['new-session', '-d', '-s', 'top', '-x', '160', '-y', '40', '-c', ROOT, command]);
    assert.equal(started.exitCode, 0, started.stderr);
    await waitFor(async () => /LATEST BLOCKS/.test(await screen()), { timeoutMs: 10_000, what: 'rated top to draw its screen' });
    await waitFor(async () => {
      const s = await screen();
      return /^203\.0\.113\.2\s+rule\s+flood/m.test(s) && /^203\.0\.113\.1\s+flood\s+\d+\/40/m.test(s) && /notifications\/s\s+http [1-9]/.test(s);
    }, { timeoutMs: 15_000, intervalMs: 500, what: `the screen to show the load:\n${await screen()}` });
    const s = await screen();
    assert.match(s, /^rated top · up \S+ · nftables · /m);
    assert.match(s, /active blocks 1\b/);
    assert.match(s, /CLIENTS NEAREST A LIMIT \(nearest\)/);
    await tmux(['send-keys', '-t', 'top', 'h']);
    await waitFor(async () => /CLIENTS NEAREST A LIMIT \(hits\)/.test(await screen()), { timeoutMs: 5000, what: 'the h key to sort by hits' });
    await tmux(['send-keys', '-t', 'top', 'q']);
    await waitFor(async () => (await tmux(['has-session', '-t', 'top'])).exitCode !== 0, { timeoutMs: 5000, what: 'q to quit rated top' });
  });

  test('not a terminal: one snapshot of plain lines, no escape codes', async () => {
    assert.ok(rated);
    const r = await rated.cli(['top']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.includes('\u001b'), false, 'no escape codes');
    assert.match(r.stdout, /^blocks\/s \S+ {3}lifted\/s \S+ {3}active blocks 1 /m);
    assert.match(r.stdout, /^203\.0\.113\.2\s+rule\s+flood/m);
  });
});
