// End to end with the ipset and iptables backends: real nginx reports every
// request to the built daemon; clients in their own namespaces flood it over
// veth pairs; we assert what they, `ipset list` and `iptables -S` show.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNamespace, veth, type Namespace } from '../helpers/netns.js';
import { startNginx, type Nginx } from '../helpers/nginx.js';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { MAIN_JS, startRated, type CliResult, type Rated } from '../helpers/rated.js';
import { waitFor } from '../helpers/wait-for.js';
import { cleanUp } from '../helpers/cleanup.js';

const RULE = { name: 'flood', limit: 5, window: '10s', blockSeconds: 6 };
const PORT = 8080;
const NET = {
  srv4: '192.0.2.1', bad4: '192.0.2.2',
  srv6: '2001:db8:f1::1', bad6: '2001:db8:1::2', bad6Net: '2001:db8:1::/64',
  srvOk4: '198.51.100.1', ok4: '198.51.100.2',
};
const URL4 = `http://${NET.srv4}/`;
const URL6 = `http://[${NET.srv6}]/`;
const URL_OK = `http://${NET.srvOk4}/`;
const FOREIGN_RULE = '-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT';

interface BlockJson { ip: string; rule: string | null; reason: string | null; source: string; since: string | null; expires: string | null; hits: number | null }
/** One of our kernel entries: `192.0.2.2`, `2001:db8:1::/64`; timeout in seconds where the kernel has one. */
interface Entry { readonly val: string; readonly timeout: number | null }

/** What differs between the two backends: how the kernel is read, damaged and seeded. */
interface Flavour {
  readonly backend: 'ipset' | 'iptables';
  readonly tools: readonly string[];
  entries(ns: Namespace, family: 4 | 6): Promise<Entry[]>;
  /** Our structure as the operator sees it, without our elements. */
  structure(ns: Namespace): Promise<string[]>;
  /** What a firewall reload does to us (INPUT flushed, our set or chain deleted); false when rated repaired it in between. */
  damage(ns: Namespace): Promise<boolean>;
  /** An entry rated's journal does not know, added by hand. */
  seed(ns: Namespace, addr: string): Promise<void>;
  /** Foreign state that must survive everything rated does. */
  createForeign(ns: Namespace): Promise<void>;
  foreign(ns: Namespace): Promise<string>;
}

async function lines(ns: Namespace, tool: string, args: readonly string[]): Promise<string[]> {
  return (await ns.run(tool, args)).stdout.trim().split('\n');
}

const ipset: Flavour = {
  backend: 'ipset',
  tools: ['ipset', 'iptables', 'ip6tables'],
  async entries(ns, family) {
    // Addresses (and IPv6 clients) in rated-vN, other networks in rated-vNnet.
    const texts = [(await ns.run('ipset', ['list', `rated-v${family}`])).stdout, (await ns.run('ipset', ['list', `rated-v${family}net`])).stdout];
    return texts.flatMap((text) => (text.split('\nMembers:\n')[1] ?? '').split('\n').filter((l) => l.trim() !== '').map((l) => {
      const m = /^(\S+)(?: timeout (\d+))?/.exec(l.trim());
      return { val: m?.[1] ?? l, timeout: m?.[2] === undefined ? null : Number(m[2]) };
    }));
  },
  async structure(ns) {
    const rules = [...await lines(ns, 'iptables', ['-w', '-S', 'INPUT']), ...await lines(ns, 'ip6tables', ['-w', '-S', 'INPUT'])];
    const sets = await lines(ns, 'ipset', ['list', '-name']);
    return [...rules.filter((l) => l.includes('rated')), ...sets.filter((s) => s.startsWith('rated-v')).sort()];
  },
  async damage(ns) {
    await ns.run('iptables', ['-w', '-F', 'INPUT']);
    return (await ns.exec('ipset', ['destroy', 'rated-v4'])).exitCode === 0;
  },
  async seed(ns, addr) {
    await ns.run('ipset', ['add', 'rated-v4', addr, 'timeout', '600']);
  },
  async createForeign(ns) {
    await ns.run('iptables', ['-w', '-A', 'INPUT', '-p', 'tcp', '--dport', '22', '-j', 'ACCEPT']);
    await ns.run('ipset', ['create', 'trusted', 'hash:ip']);
    await ns.run('ipset', ['add', 'trusted', '192.0.2.200']);
  },
  async foreign(ns) {
    const set = (await ns.run('ipset', ['list', 'trusted', '-output', 'save'])).stdout;
    return JSON.stringify([set, (await lines(ns, 'iptables', ['-w', '-S', 'INPUT'])).filter((l) => l === FOREIGN_RULE)]);
  },
};

const iptables: Flavour = {
  backend: 'iptables',
  tools: ['iptables', 'ip6tables', 'iptables-restore', 'ip6tables-restore'],
  async entries(ns, family) {
    const out = await lines(ns, family === 4 ? 'iptables' : 'ip6tables', ['-w', '-S', 'rated']);
    return out.flatMap((l) => {
      const m = /^-A rated -s (\S+?)(?:\/32|\/128)? -j DROP$/.exec(l);
      return m ? [{ val: m[1] as string, timeout: null }] : [];
    });
  },
  async structure(ns) {
    const all = [...await lines(ns, 'iptables', ['-w', '-S']), ...await lines(ns, 'ip6tables', ['-w', '-S'])];
    return all.filter((l) => l === '-N rated' || l === '-A INPUT -j rated');
  },
  async damage(ns) {
    await ns.run('iptables', ['-w', '-F', 'INPUT']);
    await ns.run('iptables', ['-w', '-F', 'rated']);
    return (await ns.exec('iptables', ['-w', '-X', 'rated'])).exitCode === 0;
  },
  async seed(ns, addr) {
    await ns.run('iptables', ['-w', '-A', 'rated', '-s', addr, '-j', 'DROP']);
  },
  async createForeign(ns) {
    await ns.run('iptables', ['-w', '-A', 'INPUT', '-p', 'tcp', '--dport', '22', '-j', 'ACCEPT']);
    await ns.run('iptables', ['-w', '-N', 'hostfw']);
    await ns.run('iptables', ['-w', '-A', 'hostfw', '-s', '192.0.2.200', '-j', 'ACCEPT']);
  },
  async foreign(ns) {
    return (await lines(ns, 'iptables', ['-w', '-S'])).filter((l) => l === FOREIGN_RULE || l.includes('hostfw')).join('\n');
  },
};

for (const flavour of [ipset, iptables]) {
  const tools = ['ip', 'nginx', 'curl', ...flavour.tools];
  const skip = prereqsMet(tools) ? false : `needs ${missingPrereqs(tools).join(', ')}`;

  describe(`rated end to end: nginx → rated → ${flavour.backend}`, { skip }, () => {
    const namespaces: Namespace[] = [];
    let srv: Namespace;
    let bad: Namespace;
    let good: Namespace;
    let dir = '';
    let config: string;
    let socket: string;
    let nginx: Nginx | null = null;
    let rated: Rated | null = null;
    let foreignBefore = '';

    const logs = (): string => `\n--- rated log ---\n${rated?.output(40) ?? '(not started)'}`;
    const cli = (args: readonly string[]): Promise<CliResult> => {
      if (!rated) throw new Error('rated is not running');
      return rated.cli(args);
    };
    const has = async (family: 4 | 6, val: string): Promise<Entry | undefined> =>
      (await flavour.entries(srv, family)).find((e) => e.val === val);

    async function curl(ns: Namespace, urls: readonly string[], maxTime = 2): Promise<{ codes: string[]; exit: number }> {
      const r = await ns.exec('curl', ['-s', '--max-time', String(maxTime), '-w', '%{http_code}\\n', ...urls.flatMap((u) => ['-o', '/dev/null', u])]);
      return { codes: r.stdout.trim().split('\n'), exit: r.exitCode };
    }

    async function listJson(): Promise<BlockJson[]> {
      const r = await cli(['list', '--json']);
      assert.equal(r.code, 0, `rated list --json failed: ${r.stderr}${logs()}`);
      return JSON.parse(r.stdout) as BlockJson[];
    }

    const start = async (): Promise<Rated> => (rated = await startRated({ namespace: srv, config, socket }));

    before(async () => {
      assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first (npm run build)`);
      dir = mkdtempSync(join(tmpdir(), `rated-e2e-${flavour.backend}-`));
      srv = await createNamespace('rtd-srv');
      namespaces.push(srv);
      bad = await createNamespace('rtd-bad');
      namespaces.push(bad);
      good = await createNamespace('rtd-ok');
      namespaces.push(good);
      const toBad = await veth(srv, bad, { a: `${NET.srv4}/24`, b: `${NET.bad4}/24`, a6: `${NET.srv6}/64`, b6: `${NET.bad6}/64` });
      await srv.run('ip', ['-6', 'route', 'add', '2001:db8:1::/64', 'dev', toBad.a]);
      await bad.run('ip', ['-6', 'route', 'add', '2001:db8:f1::/64', 'dev', toBad.b]);
      await veth(srv, good, { a: `${NET.srvOk4}/24`, b: `${NET.ok4}/24` });

      await flavour.createForeign(srv);
      foreignBefore = await flavour.foreign(srv);

      socket = join(dir, 'run', 'rated.sock');
      config = join(dir, 'rated.yml');
      writeFileSync(config, [
        'receivers:',
        `  http: { address: 127.0.0.1, port: ${PORT} }`,
        '  udp: null',
        'rules:',
        `  - { name: ${RULE.name}, limit: ${RULE.limit}, window: ${RULE.window}, block: ${RULE.blockSeconds}s }`,
        `allow: [127.0.0.0/8, "::1/128", ${NET.ok4}]`,
        `firewall: { backend: ${flavour.backend}, checkInterval: 2s }`,
        `control: { socket: ${socket} }`,
        `state: { dir: ${join(dir, 'state')} }`,
        '',
      ].join('\n'));
      await start();
      nginx = await startNginx({ namespace: srv, ratedPort: PORT });
    });

    after(async () => {
      await cleanUp([
        () => rated?.stop(),
        () => nginx?.stop(),
        ...namespaces.reverse().map((ns) => () => ns.delete()),
        () => { if (dir) rmSync(dir, { recursive: true, force: true }); },
      ]);
    });

    test(`the daemon starts on ${flavour.backend} and builds its structure next to the foreign rules`, async () => {
      assert.equal(rated?.started.backend, flavour.backend);
      const structure = await flavour.structure(srv);
      // ipset: four sets (v4 hash:ip, v6, v4net, v6net) and a rule each; iptables: two chains and two jumps.
      assert.equal(structure.length, flavour.backend === 'ipset' ? 8 : 4, `our rules and sets, or chains and jumps: ${JSON.stringify(structure)}`);
      assert.equal(await flavour.foreign(srv), foreignBefore);
    });

    test('an IPv4 offender over the limit is dropped; the allow-listed client is not', async () => {
      const [offender, allowed] = await Promise.all([
        curl(bad, Array<string>(RULE.limit + 1).fill(URL4)),
        curl(good, Array<string>(RULE.limit + 3).fill(URL_OK)),
      ]);
      assert.deepEqual(offender.codes, Array<string>(RULE.limit + 1).fill('200'));
      assert.deepEqual(allowed.codes, Array<string>(RULE.limit + 3).fill('200'));
      await waitFor(async () => {
        const r = await curl(bad, [URL4], 1);
        return r.exit === 28 && r.codes[0] === '000';
      }, { timeoutMs: 5000, intervalMs: 100, what: 'the offender to be dropped' }).catch((err: unknown) => {
        throw new Error(`${(err as Error).message}${logs()}`, { cause: err });
      });
      assert.deepEqual(await curl(good, [URL_OK]), { codes: ['200'], exit: 0 }, 'the allow-listed client still gets 200');

      const entry = await has(4, NET.bad4);
      assert.ok(entry, `${NET.bad4} in the kernel: ${JSON.stringify(await flavour.entries(srv, 4))}`);
      if (flavour.backend === 'ipset') {
        assert.ok(entry.timeout !== null && entry.timeout > 0 && entry.timeout <= RULE.blockSeconds, `kernel timeout ${String(entry.timeout)}s`);
      }
      assert.equal(await has(4, NET.ok4), undefined, 'the allow-listed client is not in the kernel');
      const b = (await listJson()).find((x) => x.ip === NET.bad4);
      assert.ok(b, `${NET.bad4} in rated list --json`);
      assert.equal(b.rule, RULE.name);
      assert.equal(b.source, 'rule');
    });

    test('after the block time the kernel entry is gone and the client gets 200 again', async () => {
      await waitFor(async () => (await has(4, NET.bad4)) === undefined, {
        timeoutMs: (RULE.blockSeconds + 5) * 1000, intervalMs: 200, what: `${NET.bad4} to leave the kernel`,
      });
      const back = await waitFor(async () => {
        const r = await curl(bad, [URL4], 1);
        return r.codes[0] === '200' ? r : null;
      }, { timeoutMs: 3000, intervalMs: 100, what: 'the offender to be served again' });
      assert.deepEqual(back.codes, ['200']);
      // rated's own sweep runs every second.
      await waitFor(async () => !(await listJson()).some((x) => x.ip === NET.bad4), {
        timeoutMs: 3000, intervalMs: 200, what: `${NET.bad4} to leave rated list`,
      });
    });

    test('an IPv6 offender is dropped as its /64', async () => {
      const burst = await curl(bad, Array<string>(RULE.limit + 1).fill(URL6));
      assert.deepEqual(burst.codes, Array<string>(RULE.limit + 1).fill('200'));
      await waitFor(() => has(6, NET.bad6Net), { timeoutMs: 5000, intervalMs: 100, what: `${NET.bad6Net} in the kernel` })
        .catch((err: unknown) => {
          throw new Error(`${(err as Error).message}${logs()}`, { cause: err });
        });
      assert.deepEqual(await curl(bad, [URL6], 1), { codes: ['000'], exit: 28 }, 'the IPv6 offender is dropped');
      const b = (await listJson()).find((x) => x.ip === NET.bad6Net);
      assert.equal(b?.source, 'rule');
    });

    test('a firewall reload is repaired within the check interval', async () => {
      const blocked = await cli(['block', '203.0.113.7', '--for', '1h']);
      assert.equal(blocked.code, 0, blocked.stderr);
      const structure = await flavour.structure(srv);
      const repairs = (JSON.parse((await cli(['status', '--json'])).stdout) as { firewall: { driftRepairs: number } }).firewall.driftRepairs;
      // The set or chain can only go once nothing refers to it; rated may put the reference back in between.
      await waitFor(() => flavour.damage(srv), { timeoutMs: 5000, what: 'the damage to be done' });
      await srv.run('iptables', ['-w', '-A', 'INPUT', '-p', 'tcp', '--dport', '22', '-j', 'ACCEPT']);
      await waitFor(async () => JSON.stringify(await flavour.structure(srv)) === JSON.stringify(structure) && (await has(4, '203.0.113.7')), {
        timeoutMs: 8000, intervalMs: 200, what: 'our structure and the block to come back',
      }).catch((err: unknown) => {
        throw new Error(`${(err as Error).message}${logs()}`, { cause: err });
      });
      const status = JSON.parse((await cli(['status', '--json'])).stdout) as { firewall: { driftRepairs: number } };
      assert.ok(status.firewall.driftRepairs > repairs, 'the repair is counted');
      assert.ok(rated?.lines.some((l) => typeof l.msg === 'string' && /changed by something else/.test(l.msg)), `the repair is logged${logs()}`);
      assert.deepEqual(await curl(bad, [URL4], 1), { codes: ['200'], exit: 0 }, 'the lifted IPv4 offender stays served');
    });

    test('flush lifts our entries and leaves foreign rules and sets alone', async () => {
      assert.ok((await flavour.entries(srv, 4)).length > 0);
      const flushed = await cli(['flush', '--yes']);
      assert.equal(flushed.code, 0, flushed.stderr);
      assert.deepEqual(await flavour.entries(srv, 4), []);
      assert.deepEqual(await flavour.entries(srv, 6), []);
      assert.deepEqual(await listJson(), []);
      assert.equal(await flavour.foreign(srv), foreignBefore, 'the foreign rule and set or chain are exactly as they were');
    });

    test('restart: journal blocks are adopted unchanged, unknown kernel entries as reconciled', async () => {
      const blocked = await cli(['block', '203.0.113.9', '--for', '1h', '--reason', 'kept']);
      assert.equal(blocked.code, 0, blocked.stderr);
      const exit = await rated!.stop();
      assert.equal(exit.code, 0, `SIGTERM exits 0: ${JSON.stringify(exit)}${logs()}`);
      assert.ok(exit.ms !== null && exit.ms < 5000);
      assert.ok(await has(4, '203.0.113.9'), 'the block stays in the kernel while rated is down');

      // With the daemon down, list reads the kernel directly.
      const down = await rated!.cli(['list', '--json']);
      assert.equal(down.code, 0, down.stderr);
      assert.ok((JSON.parse(down.stdout) as BlockJson[]).some((b) => b.ip === '203.0.113.9'));

      await flavour.seed(srv, '203.0.113.50');
      await start();
      const blocks = await listJson();
      const kept = blocks.find((b) => b.ip === '203.0.113.9');
      assert.equal(kept?.source, 'manual');
      assert.equal(kept.reason, 'kept');
      const adopted = blocks.find((b) => b.ip === '203.0.113.50');
      assert.ok(adopted, `203.0.113.50 adopted: ${JSON.stringify(blocks)}`);
      assert.equal(adopted.source, 'reconciled');
      assert.equal(adopted.rule, null);
      assert.ok(adopted.expires !== null, 'it has an expiry');
      const left = Date.parse(adopted.expires) - Date.now();
      if (flavour.backend === 'ipset') assert.ok(left > 590_000 && left <= 600_000, `its kernel expiry, ${left} ms`);
      else assert.ok(left > 0 && left <= RULE.blockSeconds * 1000, `the first rule's block time from adoption, ${left} ms`);
    });

    if (flavour.backend === 'iptables') {
      test('iptables: the adopted rule is lifted by rated when that time is up', async () => {
        await waitFor(async () => (await has(4, '203.0.113.50')) === undefined, {
          timeoutMs: (RULE.blockSeconds + 5) * 1000, intervalMs: 200, what: 'the adopted rule to be lifted',
        });
        assert.ok(await has(4, '203.0.113.9'), 'the manual block stays');
      });

      test('iptables: a block that ended while rated was down is removed at start', async () => {
        const short = await cli(['block', '203.0.113.77', '--for', '4s']);
        assert.equal(short.code, 0, short.stderr);
        const ends = Date.parse((JSON.parse((await cli(['list', '--json'])).stdout) as BlockJson[]).find((b) => b.ip === '203.0.113.77')?.expires ?? '');
        await rated!.stop();
        assert.ok(await has(4, '203.0.113.77'), 'nothing lifts it while rated is down');
        await waitFor(() => Date.now() > ends, { timeoutMs: 6000, what: 'the block time to pass' });
        await start();
        assert.equal(await has(4, '203.0.113.77'), undefined, 'gone once rated is back');
        assert.ok(!(await listJson()).some((b) => b.ip === '203.0.113.77'));
      });
    }

    test('unblock with the daemon down removes the kernel entry', async () => {
      await rated!.stop();
      const r = await rated!.cli(['unblock', '203.0.113.9']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await has(4, '203.0.113.9'), undefined);
      assert.equal(await flavour.foreign(srv), foreignBefore);
    });
  });
}
