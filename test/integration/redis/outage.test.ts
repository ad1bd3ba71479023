// When Redis fails: killed in the middle of a flood, or hanging. rated keeps
// protecting with local counters, says so once, never makes a notification
// wait, and resynchronises its blocks when Redis returns. Then hostile
// entries written straight into Redis, which must never reach a firewall.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { missingPrereqs, prereqsMet } from '../../helpers/prereq.js';
import { MAIN_JS, type Rated } from '../../helpers/rated.js';
import { startRedis, type RedisServer } from '../../helpers/redis.js';
import {
  createLab, list, metricsText, notify, OFFICE, reachable, RULE, setElements, status, waitListed, type Lab,
} from '../../helpers/redis-lab.js';
import { waitFor } from '../../helpers/wait-for.js';

const TOOLS = ['ip', 'nft', 'curl', 'ping', 'redis-server', 'redis-cli'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;
const TIMEOUT_MS = 500;
const PREFIX = `ro${process.pid}:`;
const UNREACHABLE = /^Redis is unreachable/;
const BACK = /^Redis is reachable again/;

describe('rated when Redis fails, and with hostile data in Redis', { skip: SKIP }, () => {
  let lab: Lab;
  let redis: RedisServer;
  let a: Rated;
  let b: Rated;
  let redisSection: string;
  const X = '10.77.0.66';
  const server = (name: string): { ns: Lab['hub']; address: string } => {
    const s = lab.servers.get(name);
    assert.ok(s);
    return s;
  };
  const count = (r: Rated, pattern: RegExp): number => r.lines.filter((l) => typeof l.msg === 'string' && pattern.test(l.msg)).length;
  const logs = (): string => `\n--- a ---\n${a.output(30)}\n--- b ---\n${b.output(30)}`;

  before(async () => {
    assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first`);
    lab = await createLab(['a', 'b', 'c']);
    redis = await startRedis({ namespace: lab.hub, host: lab.hubAddress, port: 6379 });
    // A short syncInterval: outages below last longer than it, and a resync is tried while Redis is away.
    redisSection = `{ url: "redis://${lab.hubAddress}:6379/0", prefix: "${PREFIX}", timeout: ${TIMEOUT_MS}ms, syncInterval: 2s }`;
    a = await lab.start('a', redisSection);
    b = await lab.start('b', redisSection);
  });

  after(async () => {
    try {
      await lab?.cleanup();
    } finally {
      await redis?.stop();
    }
  });

  test('Redis killed in the middle of a flood: rated keeps blocking with local counters, warns once, resynchronises when Redis is back', async () => {
    const before = await notify(server('a').ns, X, 3);
    await waitFor(async () => ((await status(a)).redis?.counting.hits ?? 0) >= 3, { what: 'a to share its first hits' });

    await redis.kill('SIGKILL');
    await waitFor(async () => (await status(a)).redis?.up === false, { what: 'a to see Redis down', timeoutMs: 10_000 });
    assert.match(await metricsText(lab.socket('a')), /^rated_redis_up 0$/m);

    // The rest of the flood reaches a while Redis is gone.
    const during = await notify(server('a').ns, X, 3);
    for (const ms of [...before, ...during]) assert.ok(ms < TIMEOUT_MS, `a notification took ${ms} ms, more than redis.timeout`);
    const onA = await waitListed(a, X);
    assert.equal(onA?.source, 'rule', 'a decided it on its own counters');
    await waitFor(async () => !(await reachable(lab.offender, server('a').address)), { what: 'a to drop the offender' });
    assert.ok(!(await list(b)).some((x) => x.ip === X), 'b cannot know yet');
    assert.equal(count(a, UNREACHABLE), 1, `one warning for the outage${logs()}`);
    assert.equal(count(b, UNREACHABLE), 1, `one warning on b too${logs()}`);

    await redis.restart();
    // a stores its block in the new, empty Redis and b adopts it.
    const onB = await waitListed(b, X, true, 15_000);
    assert.equal(onB?.source, 'cluster');
    await waitFor(async () => !(await reachable(lab.offender, server('b').address)), { what: 'b to drop the offender' });
    for (const r of [a, b]) {
      const st = await status(r);
      assert.equal(st.redis?.up, true);
      assert.equal(count(r, UNREACHABLE), 1, `still one warning${logs()}`);
      assert.equal(count(r, BACK), 1, `one line saying Redis is back${logs()}`);
    }
    assert.match(await metricsText(lab.socket('b')), /^rated_redis_up 1$/m);
    assert.equal(await redis.cli(['HEXISTS', `${PREFIX}{blocks}`, X]), '1', 'the block is in Redis again');
    // The periodic resync goes on after the outage.
    const syncs = (await status(a)).redis?.blocks.syncs ?? 0;
    await waitFor(async () => ((await status(a)).redis?.blocks.syncs ?? 0) >= syncs + 2, { what: 'two more resyncs on a', timeoutMs: 10_000 });
  });

  test('an outage longer than syncInterval: a block made and a block lifted during it are shared when Redis returns', async () => {
    const Z = '198.51.100.61';
    const W = '198.51.100.62';
    assert.equal((await a.cli(['block', W, '--for', '1h'])).code, 0);
    await waitListed(b, W, true, 10_000);
    await redis.kill('SIGKILL');
    await waitFor(async () => (await status(a)).redis?.up === false, { what: 'a to see Redis down', timeoutMs: 10_000 });
    try {
      const made = await a.cli(['block', Z, '--for', '1h']);
      assert.equal(made.code, 0, made.stderr);
      const lifted = await a.cli(['unblock', W]);
      assert.equal(lifted.code, 0, lifted.stderr);
      // Several resyncs find Redis away.
      await new Promise((resolve) => setTimeout(resolve, 5000));
      await redis.restart();
      await waitFor(async () => (await redis.cli(['HEXISTS', `${PREFIX}{blocks}`, Z])) === '1', { what: `${Z} stored in Redis`, timeoutMs: 15_000 });
      await waitListed(b, Z, true, 15_000);
      // After a reconnect backoff of up to 5 s, at the next resync (syncInterval 2 s) at the latest.
      await waitFor(async () => !(await list(b)).some((x) => x.ip === W), { what: `b to lift ${W}`, timeoutMs: 30_000 })
        .catch((err: unknown) => { throw new Error(`${(err as Error).message}${logs()}`, { cause: err }); });
    } finally {
      // Nothing of this test is left for the next one to adopt.
      for (const ip of [Z, W]) await a.cli(['unblock', ip]);
    }
  });

  test('a hanging Redis never holds a notification longer than redis.timeout', async () => {
    const Y = '10.77.0.67';
    await redis.kill('SIGSTOP');
    try {
      const times = [...await notify(server('b').ns, Y, 2)];
      await waitFor(async () => (await status(b)).redis?.up === false, { what: 'b to give up on the hanging Redis', timeoutMs: 10_000 });
      times.push(...await notify(server('b').ns, Y, 2));
      for (const ms of times) assert.ok(ms < TIMEOUT_MS, `a notification took ${ms} ms, more than redis.timeout`);
      assert.match((await status(b)).redis?.lastError ?? '', /redis\.timeout|timed out/i);
    } finally {
      await redis.kill('SIGCONT');
    }
    await waitFor(async () => (await status(b)).redis?.up === true, { what: 'b to see Redis answer again', timeoutMs: 10_000 });
  });

  test('hostile entries written straight into Redis are refused and logged; a good one is adopted', async () => {
    const now = Date.now();
    const entry = (net: string): string => JSON.stringify({ node: 'intruder', net, expires: now + 3_600_000, since: now, rule: null, reason: 'x', hits: null });
    const hostile: Array<[string, string]> = [
      ['0.0.0.0/0', entry('0.0.0.0/0')],
      ['::/0', entry('::/0')],
      ['127.0.0.1', entry('127.0.0.1')],
      [OFFICE, entry(OFFICE)],
      ['010.1.1.1', entry('010.1.1.1')],
      ['192.0.2.1 } ; flush ruleset', entry('192.0.2.1 } ; flush ruleset')],
      ['198.51.100.9', entry('0.0.0.0/0')],
      ['198.51.100.10', 'not json at all'],
      ['fe80::1%lo', entry('fe80::1%lo')],
      // Special-purpose ranges: never a remote client, whoever stores them.
      ['fe80::/64', entry('fe80::/64')],
      ['0.0.0.0/8', entry('0.0.0.0/8')],
      ['169.254.169.0/24', entry('169.254.169.0/24')],
    ];
    const good = '198.51.100.77';
    for (const [field, value] of [...hostile, [good, entry(good)] as [string, string]]) {
      await redis.cli(['HSET', `${PREFIX}{blocks}`, field, value]);
      await redis.cli(['ZADD', `${PREFIX}{blocks}:expires`, String(now + 3_600_000), field]);
    }

    // A node that starts now reads them all.
    const c = await lab.start('c', redisSection);
    const blocks = await list(c);
    assert.deepEqual(blocks.map((x) => [x.ip, x.source]).filter(([ip]) => ip !== X), [[good, 'cluster']], `only the good entry: ${JSON.stringify(blocks)}`);
    const st = await status(c);
    assert.ok((st.redis?.blocks.refused ?? 0) >= hostile.length, `refused ${String(st.redis?.blocks.refused)} of ${hostile.length}`);
    assert.ok(c.lines.some((l) => l.msg === 'refused a block from Redis'), 'the refusals are logged');

    // Published ones reach running nodes the same way.
    const published = ['0.0.0.0/0', '127.0.0.1', OFFICE, '::/0', '1.1.1.1,2.2.2.2', 'fe80::/32', '0.0.0.0/8', '198.51.100.78'];
    const refusedBefore = (await status(a)).redis?.blocks.refused ?? 0;
    for (const net of published) {
      await redis.cli(['PUBLISH', `${PREFIX}blocks`, JSON.stringify({ v: 1, op: 'block', ...JSON.parse(entry(net)) as object })]);
    }
    await redis.cli(['PUBLISH', `${PREFIX}blocks`, '{"v":1,"op":"block","node":"intruder","net":']);
    await waitListed(a, '198.51.100.78');
    await waitFor(async () => ((await status(a)).redis?.blocks.refused ?? 0) >= refusedBefore + published.length, { what: 'a to refuse the hostile messages' });

    for (const [name, r] of [['a', a], ['b', b], ['c', c]] as const) {
      const ips = (await list(r)).map((x) => x.ip);
      for (const bad of ['0.0.0.0/0', '::/0', '127.0.0.1', OFFICE, '8.1.1.1', '10.1.1.1', '1.1.1.1', '2.2.2.2', 'fe80::/64', 'fe80::/32', '0.0.0.0/8', '169.254.169.0/24']) {
        assert.ok(!ips.includes(bad), `${name} does not block ${bad}: ${ips.join(' ')}`);
      }
      const elements = await setElements(server(name).ns);
      assert.ok(!elements.some((e) => e.startsWith('0.0.0.0') || e.startsWith('127.') || e === OFFICE), `${name}'s set: ${elements.join(' ')}`);
    }
    // The hub still reaches every server: nothing blocked the world.
    for (const name of ['a', 'b', 'c']) assert.equal(await reachable(lab.hub, server(name).address), true);
    assert.equal(RULE.limit, 5);
  });
});
