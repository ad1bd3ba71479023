// A Redis Cluster that loses a master with no replica to take over: the
// masters still answer, but a third of the slots have no master. rated must
// count locally and say Redis is down until the cluster covers every slot
// again, not report it back while the slots are lost.
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
const BACK = /^Redis is reachable again/;

describe('Redis Cluster health is judged by slot coverage', { skip: SKIP }, () => {
  let lab: Lab;
  let cluster: Awaited<ReturnType<typeof startRedisCluster>>;
  let a: Rated;

  before(async () => {
    assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first`);
    lab = await createLab(['a']);
    cluster = await startRedisCluster({ namespace: lab.hub, host: lab.hubAddress, ports: [7101, 7102, 7103] });
    const urls = cluster.urls.map((u) => `"${u}"`).join(', ');
    a = await lab.start('a', `{ cluster: [${urls}], prefix: "rh${process.pid}:", timeout: 500ms, syncInterval: 2s }`);
  });

  after(async () => {
    try {
      await lab?.cleanup();
    } finally {
      await cluster?.stop();
    }
  });

  test('a master lost with its slots: down until every slot has a master again, then back once', async () => {
    const server = lab.servers.get('a');
    assert.ok(server);
    assert.equal((await status(a)).redis?.up, true);
    const lost = cluster.nodes[2];
    assert.ok(lost);
    await lost.kill('SIGKILL');
    // Traffic makes rated use the cluster; some of it hashes to the lost slots.
    let k = 0;
    const traffic = async (): Promise<void> => {
      await notify(server.ns, `10.77.9.${(k++ % 200) + 1}`, 1);
    };
    await waitFor(async () => {
      await traffic();
      return (await status(a)).redis?.up === false;
    }, { what: 'rated to see the cluster down', timeoutMs: 20_000, intervalMs: 200 });
    // The two live masters answer PING all along; the cluster does not cover its slots.
    const until = Date.now() + 8000;
    while (Date.now() < until) {
      await traffic();
      const st = await status(a);
      assert.equal(st.redis?.up, false, `still down while a third of the slots has no master: ${JSON.stringify(st.redis)}\n${a.output(20)}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    assert.equal(a.lines.filter((l) => typeof l.msg === 'string' && BACK.test(l.msg)).length, 0, `never reported back meanwhile:\n${a.output(20)}`);
    assert.match((await status(a)).redis?.lastError ?? '', /cluster|slot|CLUSTERDOWN|ECONNREFUSED|connect/i);

    await lost.restart();
    await waitFor(async () => {
      await traffic();
      return (await status(a)).redis?.up === true;
    }, { what: 'rated to see the cluster whole again', timeoutMs: 30_000, intervalMs: 250 });
    assert.equal(a.lines.filter((l) => typeof l.msg === 'string' && BACK.test(l.msg)).length, 1, `back once:\n${a.output(20)}`);
  });
});
