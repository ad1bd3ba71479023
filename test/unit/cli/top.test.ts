import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderTop } from '../../../src/cli/commands/top.js';
import type { TopView } from '../../../src/control/status.js';

const base: TopView = {
  at: '2026-12-05T10:00:00.000Z', uptime: 3700, backend: 'nftables', activeBlocks: 2, trackedClients: 10,
  receivers: { http: { received: 1000, rejected: 4 }, udp: { received: 0, rejected: 0 } }, blocks: 5, unblocks: 1,
  droppedPackets: 100, redis: null, closest: [], latest: [],
};

test('rates come from two samples; clients sort three ways; lines fit the width', () => {
  const cur: TopView = {
    ...base, at: '2026-12-05T10:00:02.000Z', uptime: 3702,
    receivers: { http: { received: 1500, rejected: 10 }, udp: { received: 0, rejected: 0 } }, blocks: 9, droppedPackets: 1100,
    closest: [
      { client: '203.0.113.9', rule: 'flood', hits: 30, limit: 100 },
      { client: '198.51.100.2', rule: 'login', hits: 9, limit: 10 },
    ],
    latest: [{ ip: '192.0.2.1', rule: 'flood', reason: '101 requests in 60s', source: 'rule', since: '2026-12-05T10:00:01.000Z', expires: '2026-12-05T10:10:01.000Z', hits: 101, dropped: null }],
  };
  const lines = renderTop({ prev: base, cur, seconds: 2 }, 'nearest', 200, 40, false);
  assert.equal(lines[0], 'rated top · up 1h1m42s · nftables · 10:00:02 UTC');
  assert.equal(lines[1], 'notifications/s  http 250   udp 0   rejected/s 3');
  assert.equal(lines[2], 'blocks/s 2   lifted/s 0   active blocks 2   tracked clients 10');
  assert.equal(lines[3], 'dropped packets/s 500   redis not configured');
  const clients = (order: 'nearest' | 'hits' | 'address'): string[] => renderTop({ prev: base, cur, seconds: 2 }, order, 200, 40, false)
    .filter((l) => /^(203|198)\./.test(l)).map((l) => l.split(' ')[0] ?? '');
  assert.deepEqual(clients('nearest'), ['198.51.100.2', '203.0.113.9']);
  assert.deepEqual(clients('hits'), ['203.0.113.9', '198.51.100.2']);
  assert.deepEqual(clients('address'), ['198.51.100.2', '203.0.113.9']);
  assert.ok(lines.some((l) => /^192\.0\.2\.1\s+rule\s+flood\s+10:00:01\s+9m59s {2}101 requests in 60s$/.test(l)), lines.join('\n'));
  assert.ok(renderTop({ prev: base, cur, seconds: 2 }, 'nearest', 40, 40, true).every((l) => l.length <= 40));
});
