// End to end: real nginx reports every request to the built daemon through
// the post_action snippet of SPEC §4; clients in their own namespaces flood
// it over veth pairs; we assert what they and an operator observe.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNamespace, veth, type Namespace } from '../helpers/netns.js';
import { startNginx, type Nginx } from '../helpers/nginx.js';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { MAIN_JS, ratedCli, startRated, type CliResult, type Rated } from '../helpers/rated.js';
import { waitFor } from '../helpers/wait-for.js';
import { cleanUp } from '../helpers/cleanup.js';

const TOOLS = ['ip', 'nft', 'nginx', 'curl', 'setpriv'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;

const RULE = { name: 'flood', limit: 5, window: '10s', blockSeconds: 6 };
const PORT = 8080;
const NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];

// The offender's IPv6 /64 does not contain the server's address: a block of
// a network holding one of the host's own addresses would be refused (allowSelf).
const NET = {
  srv4: '192.0.2.1', bad4: '192.0.2.2',
  srv6: '2001:db8:f1::1', bad6: '2001:db8:1::2', bad6Net: '2001:db8:1::/64',
  srvOk4: '198.51.100.1', ok4: '198.51.100.2',
};
const URL4 = `http://${NET.srv4}/`;
const URL6 = `http://[${NET.srv6}]/`;
const URL_OK = `http://${NET.srvOk4}/`;

interface NftElem { val: unknown; timeout?: number; expires?: number }
interface BlockJson { ip: string; rule: string | null; reason: string | null; source: string; since: string | null; expires: string | null; hits: number | null; dropped: { packets: number; bytes: number } | null }

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

describe('rated end to end: nginx → rated → nftables', { skip: SKIP }, () => {
  const namespaces: Namespace[] = [];
  let srv: Namespace;
  let bad: Namespace;
  let good: Namespace;
  let dir = '';
  let config: string;
  let socket: string;
  let nginx: Nginx | null = null;
  let rated: Rated | null = null;
  let hostfwBefore = '';

  /** The daemon's last log lines, appended to failure messages. */
  const logs = (): string => `\n--- rated log ---\n${rated?.output(40) ?? '(not started)'}`;

  /** `rated ARGS` against our daemon's config and socket. */
  const cli = (args: readonly string[]): Promise<CliResult> => {
    if (!rated) throw new Error('rated is not running');
    return rated.cli(args);
  };

  /** http_code of each URL, in one curl call (one connection where it can). */
  async function curl(ns: Namespace, urls: readonly string[], maxTime = 2): Promise<{ codes: string[]; exit: number }> {
    const r = await ns.exec('curl', ['-s', '--max-time', String(maxTime), '-w', '%{http_code}\\n', ...urls.flatMap((u) => ['-o', '/dev/null', u])]);
    return { codes: r.stdout.trim().split('\n'), exit: r.exitCode };
  }

  async function setElems(family: 'v4' | 'v6' | 'v4net' | 'v6net'): Promise<NftElem[]> {
    const r = await srv.run('nft', ['-j', 'list', 'set', 'inet', 'rated', family]);
    const doc = JSON.parse(r.stdout) as { nftables: Array<{ set?: { elem?: unknown[] } }> };
    const set = doc.nftables.find((i) => i.set)?.set;
    return (set?.elem ?? []).map((e) => {
      const inner = (e as { elem?: NftElem }).elem;
      return inner ?? { val: e };
    });
  }

  const isValue = (val: unknown, addr: string, len?: number): boolean => {
    if (len === undefined) return val === addr;
    const p = (val as { prefix?: { addr: string; len: number } }).prefix;
    return p?.addr === addr && p.len === len;
  };

  async function listJson(): Promise<BlockJson[]> {
    const r = await cli(['list', '--json']);
    assert.equal(r.code, 0, `rated list --json failed: ${r.stderr}${logs()}`);
    return JSON.parse(r.stdout) as BlockJson[];
  }

  async function hostfw(): Promise<string> {
    return (await srv.run('nft', ['-j', 'list', 'table', 'inet', 'hostfw'])).stdout;
  }

  before(async () => {
    assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first (npm run build)`);
    dir = mkdtempSync(join(tmpdir(), 'rated-e2e-'));
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

    // A firewall that is not ours: flush must leave it alone.
    const hostfwFile = join(dir, 'hostfw.nft');
    writeFileSync(hostfwFile, [
      'table inet hostfw {',
      '  set trusted { type ipv4_addr; elements = { 192.0.2.200 } }',
      '  chain input { type filter hook input priority 0; policy accept; ip saddr @trusted counter accept; }',
      '}',
      '',
    ].join('\n'));
    await srv.run('nft', ['-f', hostfwFile]);
    hostfwBefore = await hostfw();

    socket = join(dir, 'run', 'rated.sock');
    config = join(dir, 'rated.yml');
    writeFileSync(config, [
      'receivers:',
      `  http: { address: 127.0.0.1, port: ${PORT} }`,
      '  udp: null',
      'rules:',
      `  - { name: ${RULE.name}, limit: ${RULE.limit}, window: ${RULE.window}, block: ${RULE.blockSeconds}s }`,
      `allow: [127.0.0.0/8, "::1/128", ${NET.ok4}]`,
      'allowSelf: true',
      'firewall: { checkInterval: 2s }',
      `control: { socket: ${socket} }`,
      `state: { dir: ${join(dir, 'state')} }`,
      '',
    ].join('\n'));

    rated = await startRated({ namespace: srv, config, socket });
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

  test('the daemon starts on nftables with the receiver and socket it was given', () => {
    assert.ok(rated);
    assert.equal(rated.started.backend, 'nftables');
    assert.equal(rated.started.http, `127.0.0.1:${PORT}`);
    assert.equal(rated.started.control, socket);
  });

  test('before any flood, both clients get 200', async () => {
    assert.deepEqual(await curl(bad, [URL4]), { codes: ['200'], exit: 0 });
    assert.deepEqual(await curl(good, [URL_OK]), { codes: ['200'], exit: 0 });
  });

  test('an offender over the limit is dropped within seconds; the allow-listed client is not', async () => {
    // With the previous test's request, `limit` more make limit + 1 within
    // the window. Only the last notification crosses the limit, and it follows
    // its response, so the whole burst is served.
    const [offender, allowed] = await Promise.all([
      curl(bad, Array<string>(RULE.limit).fill(URL4)),
      curl(good, Array<string>(RULE.limit + 3).fill(URL_OK)),
    ]);
    assert.deepEqual(offender.codes, Array<string>(RULE.limit).fill('200'));
    assert.deepEqual(allowed.codes, Array<string>(RULE.limit + 3).fill('200'));

    const dropped = await waitFor(async () => {
      const r = await curl(bad, [URL4], 1);
      return r.exit === 28 && r.codes[0] === '000' ? r : null;
    }, { timeoutMs: 5000, intervalMs: 100, what: 'the offender to be dropped' }).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}${logs()}`, { cause: err });
    });
    assert.deepEqual(dropped.codes, ['000']);
    assert.deepEqual(await curl(good, [URL_OK, URL_OK]), { codes: ['200', '200'], exit: 0 }, 'the allow-listed client still gets 200');
  });

  test('the block is a v4 set element with a timeout, and rated list shows it', async () => {
    const [elems, blocks, table] = await Promise.all([setElems('v4'), listJson(), cli(['list'])]);
    const elem = elems.find((e) => isValue(e.val, NET.bad4));
    assert.ok(elem, `${NET.bad4} in set v4: ${JSON.stringify(elems)}`);
    const timeout = elem.timeout;
    assert.ok(typeof timeout === 'number', `the element has a kernel timeout: ${JSON.stringify(elem)}`);
    assert.ok(timeout > 0 && timeout <= RULE.blockSeconds + 1, `timeout ${timeout}s is the block time`);
    assert.ok(typeof elem.expires === 'number' && elem.expires > 0 && elem.expires <= timeout, `expires: ${JSON.stringify(elem)}`);
    assert.ok(!elems.some((e) => isValue(e.val, NET.ok4)), 'the allow-listed client is not in the set');

    const b = blocks.find((x) => x.ip === NET.bad4);
    assert.ok(b, `${NET.bad4} in rated list --json: ${JSON.stringify(blocks)}`);
    assert.equal(b.rule, RULE.name);
    assert.equal(b.source, 'rule');
    assert.ok(typeof b.hits === 'number' && b.hits > RULE.limit, `hits ${String(b.hits)} > ${RULE.limit}`);
    assert.match(b.since ?? '', ISO);
    assert.match(b.expires ?? '', ISO);
    const length = Date.parse(b.expires ?? '') - Date.parse(b.since ?? '');
    assert.ok(Math.abs(length - RULE.blockSeconds * 1000) < 1500, `since → expires is the block time, got ${length} ms`);
    assert.equal(typeof b.reason, 'string');
    assert.ok(!blocks.some((x) => x.ip === NET.ok4), 'the allow-listed client is not listed');
    // The offender's dropped connection attempts, counted by its own element.
    assert.ok(b.dropped !== null && b.dropped.packets >= 1 && b.dropped.bytes >= 40, `what the block dropped: ${JSON.stringify(b.dropped)}`);

    assert.equal(table.code, 0, table.stderr);
    assert.ok(table.stdout.includes(NET.bad4), `the table names ${NET.bad4}:\n${table.stdout}`);
    assert.match(table.stdout, /\bDROPPED\b/, 'the table has a DROPPED column');
    assert.match(table.stdout.split('\n').find((l) => l.startsWith(NET.bad4)) ?? '', /\b[1-9]\d* pkts \d+(\.\d)? (B|KiB|MiB)\b/);
  });

  test('after the block time the element is gone and the client gets 200 again', async () => {
    await waitFor(async () => !(await setElems('v4')).some((e) => isValue(e.val, NET.bad4)), {
      timeoutMs: (RULE.blockSeconds + 5) * 1000, intervalMs: 200, what: `${NET.bad4} to leave set v4`,
    });
    const back = await waitFor(async () => {
      const r = await curl(bad, [URL4], 1);
      return r.codes[0] === '200' ? r : null;
    }, { timeoutMs: 3000, intervalMs: 100, what: 'the offender to be served again' });
    assert.deepEqual(back.codes, ['200']);
    // That request was counted afresh: the lifted block does not come straight back.
    const blocks = await waitFor(async () => {
      const list = await listJson();
      return list.some((x) => x.ip === NET.bad4) ? null : list;
    }, { timeoutMs: 3000, intervalMs: 200, what: `${NET.bad4} to leave rated list` });
    assert.ok(!blocks.some((x) => x.ip === NET.bad4));
    assert.ok(!(await setElems('v4')).some((e) => isValue(e.val, NET.bad4)), `one request after the block did not block ${NET.bad4} again${logs()}`);
  });

  test('an IPv6 offender is blocked as its /64 in set v6', async () => {
    // A new client (its /64), so limit + 1 requests; the last one crosses the limit.
    const burst = await curl(bad, Array<string>(RULE.limit + 1).fill(URL6));
    assert.deepEqual(burst.codes, Array<string>(RULE.limit + 1).fill('200'));
    const elems = await waitFor(async () => {
      const e = await setElems('v6');
      // A hash-set element: the /64's network address, looked up with the source masked to /64.
      return e.some((x) => isValue(x.val, '2001:db8:1::')) ? e : null;
    }, { timeoutMs: 5000, intervalMs: 100, what: `${NET.bad6Net} in set v6` }).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}${logs()}`, { cause: err });
    });
    const elem = elems.find((x) => isValue(x.val, '2001:db8:1::'));
    assert.equal(typeof elem?.timeout, 'number');
    const blocks = await listJson();
    const b = blocks.find((x) => x.ip === NET.bad6Net);
    assert.ok(b, `${NET.bad6Net} in rated list --json: ${JSON.stringify(blocks)}`);
    assert.equal(b.source, 'rule');
    assert.equal(b.rule, RULE.name);
    const r = await curl(bad, [URL6], 1);
    assert.deepEqual(r, { codes: ['000'], exit: 28 }, 'the IPv6 offender is dropped');
  });

  test('manual block and unblock of a network; allow-listed addresses are refused', async () => {
    const blocked = await cli(['block', '203.0.113.0/24', '--for', '1h']);
    assert.equal(blocked.code, 0, blocked.stderr);
    const elem = (await setElems('v4net')).find((e) => isValue(e.val, '203.0.113.0', 24));
    assert.ok(elem, 'a prefix element in the interval set v4net');
    assert.ok(typeof elem.timeout === 'number' && elem.timeout >= 3590 && elem.timeout <= 3601, `timeout ${String(elem.timeout)} is an hour`);
    const b = (await listJson()).find((x) => x.ip === '203.0.113.0/24');
    assert.ok(b, '203.0.113.0/24 in rated list --json');
    assert.equal(b.source, 'manual');
    assert.equal(b.rule, null);

    const unblocked = await cli(['unblock', '203.0.113.0/24']);
    assert.equal(unblocked.code, 0, unblocked.stderr);
    assert.ok(!(await setElems('v4net')).some((e) => isValue(e.val, '203.0.113.0', 24)), 'the element is gone');
    assert.ok(!(await listJson()).some((x) => x.ip === '203.0.113.0/24'), 'the block is gone from the list');

    const refused = await cli(['block', '127.0.0.1']);
    assert.equal(refused.code, 1, `block 127.0.0.1 exits 1: ${refused.stdout}${refused.stderr}`);
    const lines = refused.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line on stderr: ${refused.stderr}`);
    assert.match(lines[0] ?? '', /allow-listed/);
    assert.ok(!(await setElems('v4')).some((e) => isValue(e.val, '127.0.0.1')));
  });

  test('flush empties our sets and leaves a foreign table untouched', async () => {
    const blocked = await cli(['block', '203.0.113.9', '--for', '1h']);
    assert.equal(blocked.code, 0, blocked.stderr);
    assert.ok((await setElems('v4')).length > 0);

    const flushed = await cli(['flush', '--yes']);
    assert.equal(flushed.code, 0, flushed.stderr);
    for (const set of ['v4', 'v6', 'v4net', 'v6net'] as const) assert.deepEqual(await setElems(set), [], `set ${set} is empty`);
    assert.deepEqual(await listJson(), []);
    assert.equal(await hostfw(), hostfwBefore, 'inet hostfw is exactly as it was');
  });

  test('bad input to the receiver gets 400 and never stops the daemon', async () => {
    const receiver = `http://127.0.0.1:${PORT}/`;
    const ask = async (headers: readonly string[]): Promise<string> => {
      const r = await srv.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2',
        ...headers.flatMap((h) => ['-H', h]), receiver]);
      return r.stdout;
    };
    assert.equal(await ask([]), '400', 'missing X-IP');
    assert.equal(await ask(['X-IP: 010.1.1.1']), '400', 'leading zeros');
    assert.equal(await ask([`X-IP: ${NET.bad4}`, 'X-IP: 192.0.2.3']), '400', 'two X-IP headers');
    assert.equal(await ask(['X-IP: 192.0.2.1 } ; flush ruleset']), '400', 'nft syntax');
    assert.equal(await ask([`X-IP: ${NET.bad4}`]), '204', 'a good notification is still accepted');

    const status = await cli(['status', '--json']);
    assert.equal(status.code, 0, status.stderr);
    assert.equal((JSON.parse(status.stdout) as { status: string }).status, 'up');
    assert.equal(await hostfw(), hostfwBefore, 'inet hostfw survived');
    const v4 = await setElems('v4');
    assert.ok(!v4.some((e) => isValue(e.val, '8.1.1.1') || isValue(e.val, '10.1.1.1')), 'no misread address reached the set');
    assert.equal(rated?.hasExited(), false);
  });

  test('configuration errors name the key path and exit 2', async () => {
    const cases: Array<[string, string, RegExp]> = [
      ['unknown.yml', 'firewall:\n  tabel: rated\n', /^rated: firewall\.tabel: .*unknown/],
      ['type.yml', 'rules:\n  - { name: x, limit: "lots", window: 10s, block: 4s }\n', /^rated: rules\[0\]\.limit: expected number, got "lots"$/],
    ];
    for (const [name, text, expected] of cases) {
      const file = join(dir, name);
      writeFileSync(file, text);
      const r = await ratedCli(srv, ['check-config', '-c', file]);
      assert.equal(r.code, 2, `${name}: exit 2, got ${r.code}: ${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${name}: one line on stderr: ${r.stderr}`);
      assert.match(lines[0] ?? '', expected);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
  });

  test('without root, run exits 1 naming --dry-run; --dry-run starts', async () => {
    // A world-readable config and a socket directory the unprivileged user owns.
    const home = join(dir, 'nobody');
    mkdirSync(home, { mode: 0o755 });
    chmodSync(dir, 0o755);
    chownSync(home, 65534, 65534);
    const file = join(home, 'rated.yml');
    writeFileSync(file, [
      `receivers: { http: { address: 127.0.0.1, port: ${PORT + 1} }, udp: null }`,
      `control: { socket: ${join(home, 'rated.sock')} }`,
      `state: { dir: ${join(home, 'state')} }`,
      '',
    ].join('\n'), { mode: 0o644 });

    const refused = await ratedCli(srv, ['run', '-c', file], { wrap: NOBODY, timeoutMs: 15_000 });
    assert.equal(refused.code, 1, `exit 1, got ${refused.code}: ${refused.stderr}`);
    const lines = refused.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line on stderr: ${refused.stderr}`);
    assert.match(lines[0] ?? '', /--dry-run/);

    const dry = await startRated({ namespace: srv, config: file, wrap: NOBODY, args: ['--dry-run'] });
    try {
      assert.equal(dry.started.backend, 'dry-run');
      const status = await dry.cli(['status', '--json']);
      assert.equal(status.code, 0, status.stderr);
      assert.equal((JSON.parse(status.stdout) as { backend: string }).backend, 'dry-run');
    } finally {
      const exit = await dry.stop();
      assert.equal(exit.code, 0, `the dry-run daemon exits 0: ${JSON.stringify(exit)}\n${dry.output(20)}`);
    }
  });

  test('SIGTERM: exits 0 within 5 s and the blocks stay in the set', async () => {
    assert.ok(rated);
    const blocked = await cli(['block', '203.0.113.7', '--for', '1h']);
    assert.equal(blocked.code, 0, blocked.stderr);
    const daemon = rated;
    const exit = await daemon.stop();
    assert.equal(exit.killed, false, `it stopped by itself${logs()}`);
    assert.equal(exit.code, 0, `exit code 0, got ${JSON.stringify(exit)}${logs()}`);
    assert.ok(exit.ms !== null && exit.ms < 5000, `stopped in ${String(exit.ms)} ms`);
    assert.ok(daemon.lines.some((l) => l.msg === 'rated stopped'), 'it says it stopped');
    const elem = (await setElems('v4')).find((e) => isValue(e.val, '203.0.113.7'));
    assert.ok(elem, 'the block is still in the kernel');
    assert.ok(typeof elem.expires === 'number' && elem.expires > 3500, 'with its timeout');

    // With the daemon down, list reads the kernel.
    const down = await daemon.cli(['list', '--json']);
    assert.equal(down.code, 0, down.stderr);
    const listed = (JSON.parse(down.stdout) as BlockJson[]).find((b) => b.ip === '203.0.113.7');
    assert.ok(listed, `203.0.113.7 listed from the kernel: ${down.stdout}`);
    assert.match(listed.expires ?? '', ISO);
  });
});
