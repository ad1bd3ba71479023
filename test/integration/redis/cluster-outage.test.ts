// A total Redis Cluster outage: every master killed for longer than the
// client's reconnect backoff reaches. rated keeps protecting, says so once,
// and writes nothing but JSON lines: no Node warning (a listener added per
// reconnect attempt grows until MaxListenersExceededWarning) on stderr.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { missingPrereqs, prereqsMet } from '../../helpers/prereq.js';
import { MAIN_JS, type Rated } from '../../helpers/rated.js';
import { startRedisCluster } from '../../helpers/redis.js';
import { createLab, notify, status, type Lab } from '../../helpers/redis-lab.js';
import { waitFor } from '../../helpers/wait-for.js';

const TOOLS = ['ip', 'nft', 'curl', 'redis-server', 'redis-cli'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;

describe('a total Redis Cluster outage', { skip: SKIP }, () => {
  let lab: Lab;
  let cluster: Awaited<ReturnType<typeof startRedisCluster>>;
  let a: Rated;

  before(async () => {
    assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first`);
    lab = await createLab(['a']);
    cluster = await startRedisCluster({ namespace: lab.hub, host: lab.hubAddress, ports: [7201, 7202, 7203] });
    const urls = cluster.urls.map((u) => `"${u}"`).join(', ');
    a = await lab.start('a', `{ cluster: [${urls}], prefix: "ro${process.pid}:", timeout: 500ms, syncInterval: 2s }`);
  });

  after(async () => {
    try {
      await lab?.cleanup();
    } finally {
      await cluster?.stop();
    }
  });

  test('every master out of reach for 60 s (TCP retransmissions back off past 50 s): still blocking, down said once, only JSON lines, then back', async () => {
    const server = lab.servers.get('a');
    assert.ok(server);
    // A partition: every packet to the masters is dropped, so each connection attempt waits for its timeout.
    await lab.hub.run('nft', ['-f', '-'], 'table inet partition {\n  chain input { type filter hook input priority -100; tcp dport 7201-7203 drop; }\n}\n');
    let k = 0;
    await waitFor(async () => {
      await notify(server.ns, `10.77.9.${(k++ % 200) + 1}`, 1);
      return (await status(a)).redis?.up === false;
    }, { what: 'rated to see the cluster down', timeoutMs: 20_000, intervalMs: 200 });
    const until = Date.now() + Number(process.env.RATED_TEST_OUTAGE_MS ?? 60_000);
    while (Date.now() < until) {
      await notify(server.ns, `10.77.9.${(k++ % 200) + 1}`, 1);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    // An offender crossing the limit meanwhile is blocked here.
    await notify(server.ns, '10.77.8.1', 7);
    await waitFor(async () => (await a.cli(['list', '--json'])).stdout.includes('10.77.8.1'), { what: 'a block during the outage', timeoutMs: 10_000 });
    const raw = a.output(100_000).split('\n');
    const stderr = raw.filter((l) => l.startsWith('[stderr]'));
    assert.deepEqual(stderr, [], 'nothing on stderr');
    assert.equal(a.lines.filter((l) => String(l.msg).startsWith('Redis is unreachable')).length, 1, 'down said once');
    await lab.hub.run('nft', ['delete', 'table', 'inet', 'partition']);
    await waitFor(async () => {
      await notify(server.ns, `10.77.9.${(k++ % 200) + 1}`, 1);
      return (await status(a)).redis?.up === true;
    }, { what: `rated to see the cluster back: ${JSON.stringify((await status(a)).redis)}\n${a.output(30)}`, timeoutMs: 40_000, intervalMs: 250 });
    assert.equal(a.hasExited(), false);
  });
});
