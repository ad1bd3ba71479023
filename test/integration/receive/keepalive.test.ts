// Connection exhaustion of the HTTP receiver: a local user opens 4,200
// connections without the token, one request each, then keeps them idle; a
// remote host opens connections that send nothing at all. Meanwhile a real
// nginx sends its post_action notifications (with the token) and every one of
// them must be counted, and the offender it reports must be dropped.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { callApi } from '../../../src/control/client.js';
import { CONNECTION_LIMITS } from '../../../src/receive/http.js';
import { createNamespace, veth, type Namespace } from '../../helpers/netns.js';
import { startNginx, type Nginx } from '../../helpers/nginx.js';
import { missingPrereqs, prereqsMet } from '../../helpers/prereq.js';
import { MAIN_JS, startRated, type Rated } from '../../helpers/rated.js';
import { waitFor } from '../../helpers/wait-for.js';

const TOOLS = ['ip', 'nft', 'nginx', 'curl'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;

const TOKEN = 'keepalive-suite-token-0123456789';
const PORT = 8080;
const SRV = '192.0.2.1';
const BAD = '192.0.2.2';
const LIMIT = 5;

// Runs inside a namespace: opens `count` connections to host:port in rounds
// of 200; each sends `request` (when given) and then stays open, idle. Prints
// one JSON line a quarter second: opened, answered (first status line seen),
// closed by the server. Exits by itself after `seconds`.
const HOLDER = `
const net = require('node:net');
const [host, port, count, request, seconds] = process.argv.slice(1);
const state = { opened: 0, answered: 0, closed: 0, statuses: {} };
const sockets = [];
const report = () => process.stdout.write(JSON.stringify(state) + '\\n');
setInterval(report, 250);
setTimeout(() => { report(); for (const s of sockets) s.destroy(); process.exit(0); }, Number(seconds) * 1000);
async function main() {
  for (let i = 0; i < Number(count); i += 200) {
    await Promise.all(Array.from({ length: Math.min(200, Number(count) - i) }, () => new Promise((resolve) => {
      const s = net.connect(Number(port), host);
      sockets.push(s);
      let seen = false;
      s.on('connect', () => { state.opened++; if (request) s.write(request.replace(/\\\\r\\\\n/g, '\\r\\n')); resolve(); });
      s.on('data', (d) => {
        if (seen) return;
        seen = true;
        state.answered++;
        const status = d.toString('latin1').split(' ')[1];
        state.statuses[status] = (state.statuses[status] || 0) + 1;
      });
      s.on('error', () => resolve());
      s.on('close', () => { state.closed++; resolve(); });
    })));
  }
}
main();
`;

interface HolderState { opened: number; answered: number; closed: number; statuses: Record<string, number> }

function hold(ns: Namespace, host: string, count: number, request: string, seconds: number): { child: ChildProcess; state: () => HolderState } {
  const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e', HOLDER, host, String(PORT), String(count), request, String(seconds)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let last: HolderState = { opened: 0, answered: 0, closed: 0, statuses: {} };
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      last = JSON.parse(line) as HolderState;
    } catch {
      // a partial line at exit
    }
  });
  return { child, state: () => last };
}

describe('HTTP receiver: connection floods do not lock nginx out', { skip: SKIP }, () => {
  let srv: Namespace;
  let bad: Namespace;
  let dir = '';
  let socket = '';
  let rated: Rated | null = null;
  let nginx: Nginx | null = null;
  const holders: ChildProcess[] = [];

  before(async () => {
    assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first (npm run build)`);
    dir = mkdtempSync(join(tmpdir(), 'rated-keepalive-'));
    socket = join(dir, 'rated.sock');
    srv = await createNamespace('rtka-srv');
    bad = await createNamespace('rtka-bad');
    await veth(srv, bad, { a: `${SRV}/24`, b: `${BAD}/24` });
    const config = join(dir, 'rated.yml');
    writeFileSync(config, [
      // Listening on every address, as a receiver shared by several web servers would.
      `receivers: { http: { address: 0.0.0.0, port: ${PORT}, token: ${TOKEN} }, udp: null }`,
      'rules:',
      `  - { name: flood, limit: ${LIMIT}, window: 60s, block: 60s }`,
      `control: { socket: ${socket} }`,
      `state: { dir: ${join(dir, 'state')} }`,
      '',
    ].join('\n'));
    rated = await startRated({ namespace: srv, config, socket });
    nginx = await startNginx({ namespace: srv, ratedPort: PORT, token: TOKEN, body: '' });
  });

  after(async () => {
    for (const h of holders) h.kill('SIGKILL');
    await rated?.stop();
    await nginx?.stop();
    await bad?.delete();
    await srv?.delete();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function received(): Promise<number> {
    const res = await callApi(socket, 'GET', '/status', undefined, 5000);
    return (res.body as { receivers: { http: { received: number } } }).receivers.http.received;
  }

  test('4,200 tokenless connections and a remote connection flood: nginx still gets every notification in', async () => {
    assert.ok(rated);
    // The local flood: one request each without the token, then idle.
    const local = hold(srv, '127.0.0.1', 4200, 'GET / HTTP/1.1\\r\\nHost: x\\r\\nX-IP: 198.51.100.9\\r\\n\\r\\n', 60);
    // The remote flood: connections that never send a byte.
    const remote = hold(bad, SRV, 300, '', 60);
    holders.push(local.child, remote.child);
    await waitFor(() => local.state().opened + local.state().closed >= 4200 && local.state().answered >= 4000, {
      timeoutMs: 40_000, what: 'the local flood to be answered',
    });
    await waitFor(() => remote.state().opened >= 300 || remote.state().closed >= 300 - CONNECTION_LIMITS.perAddress, {
      timeoutMs: 20_000, what: 'the remote flood to connect',
    });
    const l = local.state();
    assert.equal(l.statuses['403'], l.answered, `every tokenless request is refused: ${JSON.stringify(l)}`);
    await waitFor(() => local.state().closed >= local.state().answered, {
      timeoutMs: 10_000, what: `rated to close every refused connection (${JSON.stringify(local.state())})`,
    });
    assert.ok(remote.state().closed >= 300 - CONNECTION_LIMITS.perAddress,
      `at most ${CONNECTION_LIMITS.perAddress} connections are kept from one remote address: ${JSON.stringify(remote.state())}`);

    // nginx, while the remote flood still holds what it may: every request reported and counted.
    const before = await received();
    const r = await bad.exec('curl', ['-s', '--max-time', '3', '-o', '/dev/null', '-w', '%{http_code}\\n',
      ...Array.from({ length: LIMIT + 2 }, () => `http://${SRV}/`)]);
    const codes = r.stdout.trim().split('\n');
    assert.ok(codes.slice(0, LIMIT).every((c) => c === '200'), `nginx served the first requests: ${codes.join(' ')}`);
    await waitFor(async () => (await received()) - before >= codes.filter((c) => c === '200').length, {
      timeoutMs: 10_000, what: 'every nginx notification to be counted',
    });
    await waitFor(async () => {
      const probe = await bad.exec('curl', ['-s', '--max-time', '1', '-o', '/dev/null', '-w', '%{http_code}', `http://${SRV}/`]);
      return probe.stdout === '000';
    }, { timeoutMs: 10_000, what: `${BAD} to be dropped` });
    assert.ok(!rated.hasExited(), 'rated is still up');
    const idle = rated.lines.filter((l) => (l.level ?? 0) >= 50);
    assert.deepEqual(idle, [], 'nothing at error level');
  });
});
