// Redis that refuses rated itself, not an outage: a wrong or missing
// password, protected mode. rated keeps protecting on local counters, names
// the cause with what to do, once, and prints nothing but JSON lines.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { missingPrereqs, prereqsMet } from '../../helpers/prereq.js';
import { MAIN_JS, type Rated } from '../../helpers/rated.js';
import { startRedis, type RedisServer } from '../../helpers/redis.js';
import { createLab, status, type Lab } from '../../helpers/redis-lab.js';
import { waitFor } from '../../helpers/wait-for.js';

const TOOLS = ['ip', 'nft', 'curl', 'redis-server', 'redis-cli'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;

describe('Redis refuses rated: the cause and the fix are named', { skip: SKIP }, () => {
  let lab: Lab;
  const servers: RedisServer[] = [];

  before(async () => {
    assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first`);
    lab = await createLab(['a', 'b', 'c']);
    servers.push(await startRedis({ namespace: lab.hub, host: lab.hubAddress, port: 6379, password: 'the-right-one' }));
    servers.push(await startRedis({ namespace: lab.hub, host: lab.hubAddress, port: 6380, protectedMode: true }));
  });

  after(async () => {
    try {
      await lab?.cleanup();
    } finally {
      for (const s of servers) await s.stop();
    }
  });

  async function refusal(rated: Rated, fix: RegExp): Promise<void> {
    const line = await rated.waitForLine((l) => l.msg === 'Redis refuses rated', { timeoutMs: 10_000 })
      .catch((err: unknown) => { throw new Error(`${(err as Error).message}\n${rated.output(30)}`, { cause: err }); });
    assert.match(String(line.fix), fix, JSON.stringify(line));
    const st = await status(rated);
    assert.equal(st.redis?.up, false);
    assert.doesNotMatch(st.redis?.lastError ?? '', /EPIPE|ECONNRESET/, 'the cause is not hidden by the broken pipe after it');
    // A few more reconnects: still one line for it.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    assert.equal(rated.lines.filter((l) => l.msg === 'Redis refuses rated').length, 1, rated.output(30));
    assert.deepEqual(rated.lines.filter((l) => l.unparsed), [], 'only JSON lines');
    assert.equal(rated.output(200).split('\n').filter((l) => l.startsWith('[stderr]')).length, 0, `nothing raw on stderr:\n${rated.output(30)}`);
  }

  test('a wrong password: named, with the key to fix', async () => {
    const a = await lab.start('a', `{ url: "redis://:the-wrong-one@${lab.hubAddress}:6379/0", timeout: 500ms }`);
    await refusal(a, /password.*redis\.url/);
  });

  test('no password where one is required: named, with the key to fix', async () => {
    const b = await lab.start('b', `{ url: "redis://${lab.hubAddress}:6379/0", timeout: 500ms }`);
    await refusal(b, /requires a password.*redis\.url/);
  });

  test('protected mode: named, with what to change', async () => {
    const c = await lab.start('c', `{ url: "redis://${lab.hubAddress}:6380/0", timeout: 500ms }`);
    await refusal(c, /protected mode/);
    await waitFor(async () => (await status(c)).status === 'up', { what: 'c to be up' });
  });
});
