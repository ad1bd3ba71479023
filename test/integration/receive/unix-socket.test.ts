// The HTTP receiver on a unix socket (receivers.http.socket): real nginx
// reports through `upstream rated { server unix:PATH; }`, the offender is
// dropped, and a local user outside the socket's group cannot notify at all
// (on the TCP default any local user can).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { callApi } from '../../../src/control/client.js';
import { kernelSets } from '../../helpers/kernel-set.js';
import { createNamespace, veth, type Namespace } from '../../helpers/netns.js';
import { startNginx, type Nginx } from '../../helpers/nginx.js';
import { missingPrereqs, prereqsMet } from '../../helpers/prereq.js';
import { MAIN_JS, startRated, type Rated } from '../../helpers/rated.js';
import { waitFor } from '../../helpers/wait-for.js';

const TOOLS = ['ip', 'nft', 'nginx', 'curl', 'setpriv'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;
const SRV = '192.0.2.1';
const BAD = '192.0.2.2';
const LIMIT = 4;
/** nginx's workers run as nobody:nogroup in the test configuration. */
const NGINX_GROUP = 'nogroup';

describe('HTTP receiver on a unix socket', { skip: SKIP }, () => {
  let srv: Namespace;
  let bad: Namespace;
  let dir = '';
  let socket = '';
  let receiver = '';
  let rated: Rated | null = null;
  let nginx: Nginx | null = null;

  before(async () => {
    assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first`);
    dir = mkdtempSync(join(tmpdir(), 'rated-unix-'));
    // nginx's workers (nobody) must reach the socket's directory.
    chmodSync(dir, 0o755);
    socket = join(dir, 'rated.sock');
    receiver = join(dir, 'http', 'rated-http.sock');
    srv = await createNamespace('rtux-srv');
    bad = await createNamespace('rtux-bad');
    await veth(srv, bad, { a: `${SRV}/24`, b: `${BAD}/24` });
    const config = join(dir, 'rated.yml');
    writeFileSync(config, [
      `receivers: { http: { socket: ${receiver}, socketGroup: ${NGINX_GROUP} }, udp: null }`,
      `rules: [{ name: flood, limit: ${LIMIT}, window: 60s, block: 10m }]`,
      `control: { socket: ${socket} }`,
      `state: { dir: ${join(dir, 'state')} }`,
      '',
    ].join('\n'));
    rated = await startRated({ namespace: srv, config, socket });
    nginx = await startNginx({ namespace: srv, ratedPort: 1, ratedSocket: receiver, body: '' });
  });

  after(async () => {
    await nginx?.stop();
    await rated?.stop();
    await bad?.delete();
    await srv?.delete();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('the socket is 0660 in the nginx group; nginx notifications are counted and the offender is dropped', async () => {
    assert.ok(rated);
    assert.equal(rated.started.http, `unix:${receiver}`);
    const st = statSync(receiver);
    assert.equal(st.mode & 0o777, 0o660);
    const r = await bad.exec('curl', ['-s', '--max-time', '3', '-o', '/dev/null', '-w', '%{http_code}\\n',
      ...Array.from({ length: LIMIT + 1 }, () => `http://${SRV}/`)]);
    assert.deepEqual(r.stdout.trim().split('\n'), Array<string>(LIMIT + 1).fill('200'));
    await waitFor(async () => (await kernelSets(srv)).v4.includes(BAD), { what: `${BAD} in the kernel` });
    const probe = await bad.exec('curl', ['-s', '--max-time', '1', '-o', '/dev/null', '-w', '%{http_code}', `http://${SRV}/`]);
    assert.equal(probe.stdout, '000', 'the offender is dropped');
  });

  test('a local user outside the group cannot notify; nothing is counted', async () => {
    const before = ((await callApi(socket, 'GET', '/status')).body as { receivers: { http: { received: number } } }).receivers.http.received;
    const r = await srv.exec('setpriv', ['--reuid=12345', '--regid=12345', '--clear-groups', 'curl', '-s', '--max-time', '2',
      '--unix-socket', receiver, '-H', 'X-IP: 1.1.1.1', 'http://rated/']);
    assert.equal(r.exitCode, 7, `curl could not connect (exit 7): exit ${r.exitCode} ${r.stdout}${r.stderr}`);
    const after = ((await callApi(socket, 'GET', '/status')).body as { receivers: { http: { received: number } } }).receivers.http.received;
    assert.equal(after, before);
    assert.ok(!(await kernelSets(srv)).v4.includes('1.1.1.1'));
  });
});
