// End to end through the UDP and the file input: a real nginx writes its
// access log over syslog (UDP, `rated` format) or to a file (combined,
// buffered), the built daemon reads it, and netfilter drops the offender.
// Also: rotation of a followed log in the middle of a flood, and UDP garbage.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { callApi } from '../../../src/control/client.js';
import { createNamespace, veth, type Namespace } from '../../helpers/netns.js';
import { startNginx, type Nginx, type NginxInput } from '../../helpers/nginx.js';
import { missingPrereqs, prereqsMet } from '../../helpers/prereq.js';
import { MAIN_JS, startRated, type Rated } from '../../helpers/rated.js';
import { waitFor } from '../../helpers/wait-for.js';
import { cleanUp } from '../../helpers/cleanup.js';

const TOOLS = ['ip', 'nft', 'nginx', 'curl'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;

const RULE = { name: 'flood', limit: 5, window: '10s', blockSeconds: 6 };
const UDP_PORT = 5514;
const NET = { srv4: '192.0.2.1', bad4: '192.0.2.2', srvOk4: '198.51.100.1', ok4: '198.51.100.2' };
const URL4 = `http://${NET.srv4}/`;
const URL_OK = `http://${NET.srvOk4}/`;

interface ReceiverStatus {
  listen: string;
  received: number;
  rejected: number;
  ignored: number;
  drops?: number | null;
  rotations?: { rename: number; truncate: number };
  files?: Array<{ path: string; state: string }>;
}

/** Namespaces srv (nginx and rated), bad and good (clients), a dir, and cleanup. */
class Bench {
  readonly namespaces: Namespace[] = [];
  srv!: Namespace;
  bad!: Namespace;
  good!: Namespace;
  dir = '';
  socket = '';
  nginx: Nginx | null = null;
  rated: Rated | null = null;

  async setup(tag: string): Promise<void> {
    assert.ok(existsSync(MAIN_JS), `${MAIN_JS} is missing: build first (npm run build)`);
    this.dir = mkdtempSync(join(tmpdir(), `rated-${tag}-`));
    // nginx's workers (nobody) reopen the access log here after SIGUSR1.
    chmodSync(this.dir, 0o755);
    this.socket = join(this.dir, 'rated.sock');
    this.srv = await this.ns(`rt${tag}-srv`);
    this.bad = await this.ns(`rt${tag}-bad`);
    this.good = await this.ns(`rt${tag}-ok`);
    await veth(this.srv, this.bad, { a: `${NET.srv4}/24`, b: `${NET.bad4}/24` });
    await veth(this.srv, this.good, { a: `${NET.srvOk4}/24`, b: `${NET.ok4}/24` });
  }

  private async ns(name: string): Promise<Namespace> {
    const ns = await createNamespace(name);
    this.namespaces.push(ns);
    return ns;
  }

  /** Writes the configuration and starts rated, then nginx (so a log file is created after rated follows it). */
  async start(receivers: string, input: NginxInput, rule = RULE): Promise<void> {
    const config = join(this.dir, 'rated.yml');
    writeFileSync(config, [
      receivers,
      'rules:',
      `  - { name: ${rule.name}, limit: ${rule.limit}, window: ${rule.window}, block: ${rule.blockSeconds}s }`,
      `allow: [127.0.0.0/8, "::1/128", ${NET.ok4}]`,
      'firewall: { checkInterval: 2s }',
      `control: { socket: ${this.socket} }`,
      `state: { dir: ${join(this.dir, 'state')} }`,
      '',
    ].join('\n'));
    this.rated = await startRated({ namespace: this.srv, config, socket: this.socket });
    this.nginx = await startNginx({ namespace: this.srv, ratedPort: 1, input, body: '' });
  }

  async status(): Promise<{ receivers: Record<string, ReceiverStatus | null>; status: string }> {
    const res = await callApi(this.socket, 'GET', '/status', undefined, 5000);
    return res.body as { receivers: Record<string, ReceiverStatus | null>; status: string };
  }

  logs(): string {
    return `\n--- rated log ---\n${this.rated?.output(40) ?? '(not started)'}`;
  }

  async cleanup(): Promise<void> {
    await cleanUp([
      () => this.rated?.stop(),
      () => this.nginx?.stop(),
      ...this.namespaces.reverse().map((ns) => () => ns.delete()),
      () => { if (this.dir) rmSync(this.dir, { recursive: true, force: true }); },
    ]);
  }
}

/** http_code of each URL, in one curl call. */
async function curl(ns: Namespace, urls: readonly string[], maxTime = 2): Promise<{ codes: string[]; exit: number }> {
  const r = await ns.exec('curl', ['-s', '--max-time', String(maxTime), '-w', '%{http_code}\\n', ...urls.flatMap((u) => ['-o', '/dev/null', u])]);
  return { codes: r.stdout.trim().split('\n'), exit: r.exitCode };
}

async function inSet(srv: Namespace, addr: string): Promise<boolean> {
  const r = await srv.run('nft', ['-j', 'list', 'set', 'inet', 'rated', 'v4']);
  return r.stdout.includes(`"${addr}"`);
}

/** The first-version scenario: offender dropped by the kernel, allow-listed client served, block expires. */
function scenario(bench: Bench): void {
  test('before any flood, both clients get 200', async () => {
    assert.deepEqual(await curl(bench.bad, [URL4]), { codes: ['200'], exit: 0 });
    assert.deepEqual(await curl(bench.good, [URL_OK]), { codes: ['200'], exit: 0 });
  });

  test('an offender over the limit is dropped by the kernel; the allow-listed client is not', async () => {
    const [offender, allowed] = await Promise.all([
      curl(bench.bad, Array<string>(RULE.limit).fill(URL4)),
      curl(bench.good, Array<string>(RULE.limit + 3).fill(URL_OK)),
    ]);
    assert.deepEqual(offender.codes, Array<string>(RULE.limit).fill('200'));
    assert.deepEqual(allowed.codes, Array<string>(RULE.limit + 3).fill('200'));
    await waitFor(async () => {
      const r = await curl(bench.bad, [URL4], 1);
      return r.exit === 28 && r.codes[0] === '000';
    }, { timeoutMs: 6000, intervalMs: 200, what: 'the offender to be dropped' }).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}${bench.logs()}`, { cause: err });
    });
    assert.ok(await inSet(bench.srv, NET.bad4), `${NET.bad4} is in set v4`);
    assert.ok(!(await inSet(bench.srv, NET.ok4)), 'the allow-listed client is not in the set');
    assert.deepEqual(await curl(bench.good, [URL_OK, URL_OK]), { codes: ['200', '200'], exit: 0 });
    const list = await bench.rated?.cli(['list', '--json']);
    const blocks = JSON.parse(list?.stdout ?? '[]') as Array<{ ip: string; rule: string; source: string }>;
    const b = blocks.find((x) => x.ip === NET.bad4);
    assert.equal(b?.rule, RULE.name);
    assert.equal(b?.source, 'rule');
  });

  test('after the block time the offender is served again', async () => {
    await waitFor(async () => !(await inSet(bench.srv, NET.bad4)), {
      timeoutMs: (RULE.blockSeconds + 5) * 1000, intervalMs: 250, what: `${NET.bad4} to leave set v4`,
    });
    const back = await waitFor(async () => {
      const r = await curl(bench.bad, [URL4], 1);
      return r.codes[0] === '200' ? r : null;
    }, { timeoutMs: 3000, intervalMs: 100, what: 'the offender to be served again' });
    assert.deepEqual(back.codes, ['200']);
  });
}

describe('UDP input: nginx access_log syslog → rated → nftables', { skip: SKIP }, () => {
  const bench = new Bench();
  before(async () => {
    await bench.setup('u');
    await bench.start(`receivers: { http: null, udp: { address: 127.0.0.1, port: ${UDP_PORT} } }`, { kind: 'udp', port: UDP_PORT });
  });
  after(() => bench.cleanup());

  test('the daemon says where it listens and what receive buffer it got', () => {
    const rated = bench.rated;
    assert.ok(rated);
    assert.equal(rated.started.udp, `127.0.0.1:${UDP_PORT}`);
    assert.equal(rated.started.http, null);
    // One line at start-up says it all: the buffer obtained is part of it.
    const buffer = rated.started.udpReceiveBuffer;
    assert.ok(typeof buffer === 'number' && buffer > 0, `the started line gives the buffer obtained${bench.logs()}`);
    const upTo = rated.lines.findIndex((l) => typeof l.msg === 'string' && l.msg.startsWith('rated started'));
    assert.deepEqual(rated.lines.slice(0, upTo).filter((l) => l.level === 30), [], `no other info line before it${bench.logs()}`);
  });

  scenario(bench);

  test('garbage datagrams (empty, huge, binary, forged header) are dropped and counted; the daemon stays up', async () => {
    const before = await bench.status();
    const udp0 = before.receivers.udp;
    assert.ok(udp0);
    const script = `
      const s = require('node:dgram').createSocket('udp4');
      const send = (b) => new Promise((ok, ko) => s.send(b, ${UDP_PORT}, '127.0.0.1', (e) => (e ? ko(e) : ok())));
      (async () => {
        await send(Buffer.alloc(0));
        await send(Buffer.alloc(65507, 0x41));
        await send(Buffer.from([0, 1, 2, 3, 0xff, 0xfe]));
        await send(Buffer.from('<999>Nov 22 07:40:00 web nginx: 203.0.113.9 GET 200 h /'));
        await send(Buffer.from('<190>Nov 22 07:40:00 web nginx: 010.1.1.1 GET 200 h /'));
        await send(Buffer.from('<190>Nov 22 07:40:00 web nginx: 203.0.113.50 GET 200 h /after-garbage'));
        s.close();
      })().catch((e) => { console.error(e); process.exit(1); });
    `;
    const sent = await bench.srv.exec(process.execPath, ['-e', script]);
    assert.equal(sent.exitCode, 0, sent.stderr);
    const after = await waitFor(async () => {
      const s = await bench.status();
      const udp = s.receivers.udp;
      return udp && udp.received >= udp0.received + 1 && udp.rejected >= udp0.rejected + 5 ? s : null;
    }, { what: 'the datagrams to be counted' });
    const udp = after.receivers.udp;
    assert.ok(udp);
    assert.equal(udp.rejected - udp0.rejected, 5, 'empty, huge, binary, forged header, leading-zero address');
    assert.equal(udp.received - udp0.received, 1, 'the good line after the garbage');
    assert.equal(after.status, 'up');
    assert.equal(typeof udp.drops, 'number');
    assert.equal(bench.rated?.hasExited(), false);
    assert.ok(!(await inSet(bench.srv, '10.1.1.1')) && !(await inSet(bench.srv, '8.1.1.1')), 'no misread address reached the set');
    const metrics = await callApi(bench.socket, 'GET', '/metrics');
    const text = String(metrics.body);
    assert.match(text, /rated_notifications_rejected_total\{receiver="udp",reason="bad-header"\} 1/);
    assert.match(text, /rated_notifications_rejected_total\{receiver="udp",reason="empty"\} 1/);
    assert.match(text, /rated_udp_drops_total \d+/);
  });
});

describe('file input: nginx access log (combined, buffer=, flush=1s) → rated → nftables', { skip: SKIP }, () => {
  const bench = new Bench();
  before(async () => {
    await bench.setup('f');
    const log = join(bench.dir, 'access.log');
    await bench.start(`receivers: { http: null, udp: null, files: [${log}] }`, { kind: 'file', path: log, buffer: '32k', flush: '1s' });
  });
  after(() => bench.cleanup());

  test('the daemon names the file it follows', async () => {
    assert.deepEqual(bench.rated?.started.files, [join(bench.dir, 'access.log')]);
    const s = await bench.status();
    assert.equal(s.receivers.files?.files?.[0]?.state, 'following');
  });

  scenario(bench);
});

describe('file input: rotation by rename and by copytruncate in the middle of a flood', { skip: SKIP }, () => {
  const bench = new Bench();
  let log = '';
  const total = 6000;
  before(async () => {
    await bench.setup('r');
    log = join(bench.dir, 'access.log');
    // Buffered like a busy site: nginx writes every second, so a copytruncate
    // right after a write loses nothing (logrotate's own copytruncate loses
    // what is written between its copy and its truncate).
    await bench.start(`receivers: { http: null, udp: null, files: [${log}] }`, { kind: 'file', path: log, format: 'rated', buffer: '4m', flush: '1s' },
      { name: 'flood', limit: 1_000_000, window: '10s', blockSeconds: 60 });
  });
  after(() => bench.cleanup());

  const lines = (path: string): number => {
    try {
      return readFileSync(path, 'latin1').split('\n').filter((l) => l !== '').length;
    } catch {
      return 0;
    }
  };
  const received = async (): Promise<number> => (await bench.status()).receivers.files?.received ?? -1;

  test('every line written is counted exactly once', async () => {
    const flood = execa('ip', ['netns', 'exec', bench.bad.name, 'curl', '-s', '--rate', '600/s', '--max-time', '60', '-w', '%{http_code}\\n', `${URL4}?n=[1-${total}]`], {
      reject: false, timeout: 90_000, input: '',
    });

    // Rename while nginx keeps writing to the old file, then let it reopen its logs (what logrotate's postrotate does).
    await waitFor(async () => (await received()) >= total / 4, { timeoutMs: 15_000, what: 'a quarter of the flood' });
    renameSync(log, `${log}.1`);
    await new Promise((r) => setTimeout(r, 300));
    process.kill(bench.nginx?.pid ?? -1, 'SIGUSR1');
    await waitFor(() => existsSync(log), { what: 'nginx to reopen its log' });

    // copytruncate, right after nginx wrote its buffer and rated read it.
    await waitFor(async () => (await received()) >= total / 2, { timeoutMs: 15_000, what: 'half of the flood' });
    let done = false;
    for (let attempt = 0; attempt < 10 && !done; attempt++) {
      const size = statSync(log).size;
      await waitFor(() => statSync(log).size !== size, { timeoutMs: 3000, intervalMs: 5, what: 'nginx to write its buffer' });
      const written = statSync(log).size;
      const caughtUp = await waitFor(async () => (await received()) === lines(`${log}.1`) + lines(log), { timeoutMs: 500, intervalMs: 10 }).catch(() => false);
      if (!caughtUp || statSync(log).size !== written) continue;
      copyFileSync(log, `${log}.2`);
      truncateSync(log, 0);
      done = true;
    }
    assert.ok(done, `found a quiet moment for copytruncate${bench.logs()}`);

    const r = await flood;
    const codes = r.stdout.trim().split('\n');
    assert.equal(codes.length, total, `curl made ${total} requests: ${r.stderr}`);
    assert.ok(codes.every((c) => c === '200'), 'all were served');
    const onDisk = (): number => lines(`${log}.1`) + lines(`${log}.2`) + lines(log);
    await waitFor(async () => onDisk() >= total && (await received()) === onDisk(), {
      timeoutMs: 10_000, what: 'rated to read everything nginx wrote',
    }).catch(async (err: unknown) => {
      throw new Error(`${(err as Error).message}: received ${await received()}, on disk ${onDisk()}${bench.logs()}`, { cause: err });
    });
    // Still equal a moment later: nothing counted twice late.
    await new Promise((r2) => setTimeout(r2, 1500));
    const s = await bench.status();
    const files = s.receivers.files;
    assert.ok(files);
    assert.equal(files.received, onDisk(), 'every line on disk counted exactly once');
    const probes = onDisk() - total;
    assert.ok(probes >= 0 && probes < 20, `only nginx's start-up probes besides the flood: ${probes}`);
    assert.deepEqual(files.rotations, { rename: 1, truncate: 1 });
    assert.equal(files.rejected, 0);
  });
});
