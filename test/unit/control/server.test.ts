// The control API over a real unix socket in a temporary directory, with the
// client the CLI uses, in front of an API that records what it was asked.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockView } from '../../../src/block.js';
import { callApi } from '../../../src/control/client.js';
import type { ControlApi } from '../../../src/control/api.js';
import { ControlServer, listenControl, refuseIfRunning } from '../../../src/control/server.js';
import { parseListen } from '../../../src/address.js';
import { RatedError } from '../../../src/errors.js';
import { createLogger } from '../../../src/log.js';

const view = (ip: string): BlockView => ({
  ip, rule: null, reason: 'manual', source: 'manual', since: null, expires: null, hits: null, dropped: null,
});

const asked: string[] = [];
const api: ControlApi = {
  status: async () => ({ status: 'up' }),
  blocks: async () => [view('198.51.100.7')],
  block: async (input) => {
    asked.push(`block ${input.ip} ${String(input.for)} ${String(input.reason)}`);
    if (input.ip === '127.0.0.1') throw new RatedError('REFUSED', '127.0.0.1 is allow-listed');
    return { block: view(input.ip), outcome: 'added' };
  },
  unblock: async (ip) => {
    asked.push(`unblock ${ip}`);
    return ip === '198.51.100.7' ? view(ip) : null;
  },
  blockMany: async (inputs, source, dryRun) => {
    asked.push(`blockMany ${inputs.length} ${source} ${String(dryRun)} ${inputs.map((i) => `${i.ip}/${String(i.for)}/${String(i.reason)}`).join(' ')}`);
    return { added: inputs.length, extended: 0, unchanged: 0, refused: {}, examples: [], refusedIps: [] };
  },
  flush: async () => 3,
  metrics: async () => 'rated_up 1\n',
  top: async (clients, blocks) => {
    asked.push(`top ${clients} ${blocks}`);
    return { at: '', uptime: 0, backend: 'dry-run', activeBlocks: 0, trackedClients: 0, receivers: {}, blocks: 0, unblocks: 0, droppedPackets: null, redis: null, closest: [], latest: [] };
  },
  explain: async (ip) => ({ ip }),
};

let dir = '';
let socket = '';
let control: { socket: string; close: () => Promise<void> };
const METRICS_PORT = 40_000 + (process.pid % 20_000);

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rated-control-'));
  socket = join(dir, 'control.sock');
  control = await listenControl(socket, api, createLogger('silent'), false, `127.0.0.1:${METRICS_PORT}`);
});

after(async () => {
  await control.close();
  rmSync(dir, { recursive: true, force: true });
});

test('the socket is private to its owner and group (0660)', () => {
  assert.equal(statSync(socket).mode & 0o777, 0o660);
});

test('GET /status and /blocks answer with the API\'s values', async () => {
  assert.deepEqual((await callApi(socket, 'GET', '/status')).body, { status: 'up' });
  const res = await callApi(socket, 'GET', '/blocks');
  assert.equal(res.status, 200);
  assert.deepEqual((res.body as BlockView[]).map((b) => b.ip), ['198.51.100.7']);
});

test('POST /blocks passes ip, for and reason on; a new block is 201', async () => {
  const res = await callApi(socket, 'POST', '/blocks', { ip: '203.0.113.9', for: '1h', reason: 'scanner' });
  assert.equal(res.status, 201);
  assert.equal((res.body as { outcome: string }).outcome, 'added');
  assert.equal(asked.at(-1), 'block 203.0.113.9 1h scanner');
});

test('POST /blocks/batch passes entries, source and dry run on; bad batches are 400 naming the field', async () => {
  const res = await callApi(socket, 'POST', '/blocks/batch', { blocks: [{ ip: '192.0.2.1', for: 60 }, { ip: '192.0.2.2', reason: 'list' }], source: 'migrated', dryRun: true });
  assert.equal(res.status, 200, res.text);
  assert.equal((res.body as { added: number }).added, 2);
  assert.equal(asked.at(-1), 'blockMany 2 migrated true 192.0.2.1/60/undefined 192.0.2.2/undefined/list');
  for (const [body, field] of [
    [{ blocks: 'x' }, /^blocks:/], [{ blocks: [{ for: 1 }] }, /^ip:/], [{ blocks: [], source: 'rule' }, /^source:/],
    [{ blocks: [], dryRun: 'yes' }, /^dryRun:/], [{ blocks: Array.from({ length: 10_001 }, () => ({ ip: '192.0.2.1' })) }, /^blocks:/],
  ] as const) {
    const bad = await callApi(socket, 'POST', '/blocks/batch', body);
    assert.equal(bad.status, 400, JSON.stringify(body).slice(0, 80));
    assert.match((bad.body as { error: string }).error, field);
  }
});

test('GET /top takes clients and blocks from 1 to 100', async () => {
  assert.equal((await callApi(socket, 'GET', '/top?clients=5&blocks=7')).status, 200);
  assert.equal(asked.at(-1), 'top 5 7');
  assert.equal((await callApi(socket, 'GET', '/top')).status, 200);
  assert.equal(asked.at(-1), 'top 10 10');
  for (const q of ['clients=0', 'clients=101', 'blocks=x', 'blocks=1e3']) {
    const bad = await callApi(socket, 'GET', `/top?${q}`);
    assert.equal(bad.status, 400, q);
    assert.match((bad.body as { error: string }).error, /^(clients|blocks):/);
  }
});

test('bad bodies are 400 naming the field, refusals 409, unknown blocks 404, unknown paths 404', async () => {
  const noIp = await callApi(socket, 'POST', '/blocks', { for: '1h' });
  assert.equal(noIp.status, 400);
  assert.match((noIp.body as { error: string }).error, /^ip:/);
  const badFor = await callApi(socket, 'POST', '/blocks', { ip: '203.0.113.9', for: [] });
  assert.equal(badFor.status, 400);
  assert.match((badFor.body as { error: string }).error, /^for:/);
  const refused = await callApi(socket, 'POST', '/blocks', { ip: '127.0.0.1' });
  assert.equal(refused.status, 409);
  assert.equal((refused.body as { code: string }).code, 'REFUSED');
  const missing = await callApi(socket, 'DELETE', '/blocks/192.0.2.200');
  assert.equal(missing.status, 404);
  assert.equal((missing.body as { code: string }).code, 'NOT_FOUND');
  assert.equal((await callApi(socket, 'GET', '/nothing')).status, 404);
  assert.equal((await callApi(socket, 'PUT', '/blocks')).status, 405);
});

test('DELETE /blocks/<ip> decodes the target (a CIDR in the path); DELETE /blocks flushes', async () => {
  const res = await callApi(socket, 'DELETE', `/blocks/${encodeURIComponent('198.51.100.7')}`);
  assert.equal(res.status, 200);
  assert.equal(asked.at(-1), 'unblock 198.51.100.7');
  await callApi(socket, 'DELETE', `/blocks/${encodeURIComponent('203.0.113.0/24')}`);
  assert.equal(asked.at(-1), 'unblock 203.0.113.0/24');
  assert.deepEqual((await callApi(socket, 'DELETE', '/blocks')).body, { lifted: 3 });
});

test('a second server on a live socket is refused with ALREADY_RUNNING; the first keeps answering', async () => {
  await assert.rejects(refuseIfRunning(socket), (err: RatedError) => err.code === 'ALREADY_RUNNING');
  await assert.rejects(new ControlServer(socket, api, createLogger('silent')).listen(), (err: RatedError) => err.code === 'ALREADY_RUNNING');
  assert.equal((await callApi(socket, 'GET', '/status')).status, 200);
});

test('a socket nobody answers on is unreachable, not an answer', async () => {
  await assert.rejects(callApi(join(dir, 'none.sock'), 'GET', '/status'), (err: RatedError) => err.code === 'DAEMON_UNREACHABLE');
});

test('metrics.listen serves GET /metrics over TCP, and nothing else', async () => {
  const askedBefore = asked.length;
  const metrics = await fetch(`http://127.0.0.1:${METRICS_PORT}/metrics`);
  assert.equal(metrics.status, 200);
  assert.match(metrics.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  assert.equal(await metrics.text(), 'rated_up 1\n');
  for (const [method, path] of [['GET', '/status'], ['GET', '/blocks'], ['DELETE', '/blocks'], ['POST', '/metrics']]) {
    const res = await fetch(`http://127.0.0.1:${METRICS_PORT}${path}`, { method });
    assert.equal(res.status, 404, `${method} ${path}`);
  }
  assert.deepEqual(asked.slice(askedBefore), [], 'nothing reached the API but metrics');
});

test('metrics.listen takes ADDRESS:PORT and [IPV6]:PORT, nothing else', () => {
  assert.deepEqual(parseListen('127.0.0.1:9466'), { address: '127.0.0.1', port: 9466 });
  assert.deepEqual(parseListen('[::1]:9466'), { address: '::1', port: 9466 });
  assert.deepEqual(parseListen('0.0.0.0:9466'), { address: '0.0.0.0', port: 9466 });
  for (const bad of ['localhost:9466', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:70000', '::1:9466', '10.0.0.0/8:80', '[127.0.0.1]:80x']) {
    assert.equal(parseListen(bad), null, bad);
  }
});
