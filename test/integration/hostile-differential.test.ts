// Validator against firewall, on generated hostile strings (fast-check):
// whatever parseAddress accepts, nft accepts in check mode, and once added
// for real reads back as the very same address (compared by an independent
// parser, never by ours); whatever it rejects never reaches a firewall
// command, shown by recording every nft invocation of the real pipeline
// (HTTP receiver → limiter → blocker → nftables backend) and finding in them
// exactly the clients of the accepted strings. Everything runs against the
// real nft inside a namespace this file creates and deletes.
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import { Address4, Address6 } from 'ip-address';
import { clientKey, parseAddress, parseNetwork, type Network } from '../../src/address.js';
import type { Op } from '../../src/enforce/backend.js';
import { Blocker } from '../../src/enforce/blocker.js';
import { NftablesBackend, renderOps, renderStructure, type NftOptions } from '../../src/enforce/nftables.js';
import type { Runner } from '../../src/run-command.js';
import { AllowList } from '../../src/limit/allow.js';
import { Limiter } from '../../src/limit/limiter.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import { HttpReceiver } from '../../src/receive/http.js';
import { addressLike, seedFromEnv } from '../helpers/address-arbitrary.js';
import { createNamespace, type Namespace } from '../helpers/netns.js';
import { prereqsMet, requireRoot, requireTools } from '../helpers/prereq.js';

const TOOLS = ['nft', 'ip'];
/** Generated strings per test; they go to nft in a handful of transactions. */
const COUNT = 4000;
const OPTS: NftOptions = { table: 'rdiff', hook: 'input', priority: 0, ipv6Prefix: 64, maxBlocks: 1_048_576 };

let ns: Namespace | undefined;

before(async () => {
  if (prereqsMet(TOOLS)) ns = await createNamespace('rtd-diff');
});

after(async () => {
  await ns?.delete();
});

function setup(t: TestContext): Namespace | null {
  if (!requireRoot(t) || !requireTools(t, TOOLS)) return null;
  assert.ok(ns, 'the namespace was created');
  return ns;
}

type Json = Record<string, unknown>;

/** What nft stores, read with ip-address: `4:<value>/<len>` or `6:<value>/<len>`. */
async function kernelValues(n: Namespace, table: string): Promise<string[]> {
  const out: string[] = [];
  for (const set of ['v4', 'v6', 'v4net', 'v6net'] as const) {
    const v4 = set.startsWith('v4');
    const r = await n.run('nft', ['-j', 'list', 'set', 'inet', table, set]);
    const doc = JSON.parse(r.stdout) as { nftables: Array<{ set?: { elem?: unknown[] } }> };
    for (const raw of doc.nftables.find((i) => i.set)?.set?.elem ?? []) {
      const e = (raw as { elem?: { val: unknown } }).elem;
      const val = e ? e.val : raw;
      // Hash set v6 holds IPv6 clients as their network address.
      const [addr, len] = typeof val === 'string'
        ? [val, v4 ? 32 : set === 'v6' ? OPTS.ipv6Prefix : 128]
        : [(val as { prefix: { addr: string } }).prefix.addr, (val as { prefix: { len: number } }).prefix.len];
      const value = v4 ? new Address4(addr).bigInt() : new Address6(addr).bigInt();
      out.push(`${v4 ? 4 : 6}:${value}/${len}`);
    }
  }
  return out.sort();
}

const key = (n: Network): string => `${n.family}:${n.value}/${n.prefix}`;

/** Adds `nets` through the production renderer: check mode first, then for real; returns what the kernel holds. */
async function roundTrip(n: Namespace, nets: readonly Network[]): Promise<string[]> {
  const ops: Op[] = nets.map((net) => ({ kind: 'add', net, timeoutMs: 3_600_000, replace: false }));
  const doc = JSON.stringify(renderOps(OPTS, ops));
  const checked = await n.exec('nft', ['-c', '-j', '-f', '-'], doc);
  assert.equal(checked.exitCode, 0, `nft -c accepts every canonical form: ${checked.stderr.split('\n').slice(0, 3).join(' | ')}`);
  await n.run('nft', ['-j', '-f', '-'], doc);
  const held = await kernelValues(n, OPTS.table);
  await n.run('nft', ['-j', '-f', '-'], JSON.stringify({ nftables: ['v4', 'v6', 'v4net', 'v6net'].map((name) => ({ flush: { set: { family: 'inet', table: OPTS.table, name } } })) }));
  return held;
}

test('every address the validator accepts, nft accepts in check mode and stores as the same address', async (t) => {
  const n = setup(t);
  if (!n) return;
  await n.run('nft', ['-j', '-f', '-'], JSON.stringify(renderStructure(OPTS, false)));
  const seed = seedFromEnv();
  const strings = fc.sample(addressLike, { numRuns: COUNT, seed });
  const unique = new Map<string, Network>();
  for (const s of strings) {
    const net = parseAddress(s);
    if (net) unique.set(net.text, net);
  }
  // The canonical forms of well-known traps, too: mapped, embedded, compressed, upper case.
  for (const s of ['::ffff:192.0.2.1', '::ffff:c000:201', '2001:DB8::1', '::127.0.0.1', '1:2:3:4:5:6:1.2.3.4', '1::', '::2:3:4:5:6:7:8', '64:ff9b::c000:201']) {
    const net = parseAddress(s);
    assert.ok(net, s);
    unique.set(net.text, net);
  }
  const addresses = [...unique.values()];
  t.diagnostic(`fast-check seed ${seed} (RATED_FC_SEED=${seed} replays it): ${COUNT} strings, ${addresses.length} distinct addresses accepted`);
  assert.ok(addresses.length > 100, `enough accepted addresses to mean something: ${addresses.length}`);

  assert.deepEqual(await roundTrip(n, addresses), addresses.map(key).sort(), 'nft holds exactly the addresses the validator meant');

  // IPv6 clients are blocked by their /64: those prefixes too.
  const clients = new Map<string, Network>();
  for (const a of addresses) {
    const c = clientKey(a, 64);
    clients.set(c.text, c);
  }
  assert.deepEqual(await roundTrip(n, [...clients.values()]), [...clients.values()].map(key).sort(), 'nft holds exactly the client networks');
  await n.run('nft', ['delete', 'table', 'inet', OPTS.table]);
});

test('a rejected string never reaches a firewall command: the pipeline\'s nft input holds exactly the accepted clients', async (t) => {
  const n = setup(t);
  if (!n) return;
  const seed = seedFromEnv();
  // Header values as nginx could never send them, but an attacker could: any bytes but CR, LF and NUL,
  // which end or break the header before the receiver sees it (their rows are in hostile.test.ts).
  const strings = fc.sample(addressLike, { numRuns: COUNT, seed }).filter((s) => !/[\r\n\0]/.test(s) && s.length < 6000);

  const calls: Array<{ file: string; args: readonly string[]; input: string | undefined }> = [];
  const recording: Runner = (file, args, input) => {
    calls.push({ file, args, input });
    return n.runner(file, args, input);
  };
  const metrics: Metrics = new Metrics({ activeBlocks: () => 0, trackedClients: () => 0 });
  const log = createLogger('silent');
  const backend = new NftablesBackend(recording, { ...OPTS, table: 'rpipe' });
  await backend.ensure();
  const allow = new AllowList([parseNetwork('127.0.0.0/8'), parseNetwork('::1')].filter((x): x is Network => x !== null));
  const blocker = new Blocker({ backend, isAllowed: (net) => allow.has(net), log, metrics, batchDelayMs: 5 });
  const limiter = new Limiter({
    rules: [{ name: 'diff', match: {}, limit: 1, windowMs: 600_000, blockMs: 600_000 }],
    allow, ipv6Prefix: 64, maxClients: 100_000,
    escalation: { factor: 1, maxMs: 600_000, memoryMs: 0 },
    isBlocked: (c) => blocker.has(c),
    onVerdict: (v) => { blocker.block({ net: v.client, durationMs: v.blockMs, source: 'rule', rule: v.rule, hits: v.hits }); },
  });
  // Listens on the test host's loopback only, on a port the kernel picks.
  const receiver = new HttpReceiver({ address: '127.0.0.1', port: 0, header: 'X-IP', token: null, sink: (hit) => limiter.record(hit), metrics, log });
  await receiver.listen();
  const port = Number(receiver.endpoint.split(':').pop());
  calls.length = 0;

  /**
   * Sends `value` twice (one over the limit) as X-IP on one connection;
   * returns the status codes: two when accepted, one when refused (a refusal
   * closes the connection).
   */
  const send = (value: string): Promise<number[]> => new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const one = Buffer.concat([Buffer.from('GET / HTTP/1.1\r\nHost: rated\r\nX-IP: '), Buffer.from(value, 'utf8'), Buffer.from('\r\n\r\n')]);
    let text = '';
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if ((text.match(/HTTP\/1\.1 \d{3} /g) ?? []).length >= 2) socket.destroy();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve([...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]))));
    socket.write(Buffer.concat([one, one]));
  });

  const started = performance.now();
  const expectedClients = new Set<string>();
  for (let i = 0; i < strings.length; i += 50) {
    const batch = strings.slice(i, i + 50);
    const answers = await Promise.all(batch.map(send));
    batch.forEach((s, j) => {
      // What the handler sees: the bytes as Latin-1, as Node's HTTP parser hands them over.
      const seen = Buffer.from(s, 'utf8').toString('latin1');
      const net = parseAddress(seen);
      const codes = answers[j] ?? [];
      // eslint-disable-next-line no-control-regex -- control bytes are what it looks for
      const controls = /[\u0000-\u0008\u000a-\u001f\u007f]/.test(seen);
      if (controls) {
        assert.ok(codes.length <= 1 && codes.every((c) => c === 400), `${JSON.stringify(s)}: the HTTP parser refuses control bytes: ${JSON.stringify(codes)}`);
        return;
      }
      assert.deepEqual(codes, net ? [204, 204] : [400], `${JSON.stringify(s)} → ${net?.text ?? 'refused'}`);
      if (net && !allow.has(net)) {
        const client = clientKey(net, 64);
        expectedClients.add(allow.has(client) ? net.text : client.text);
      }
    });
  }
  await blocker.settle();
  await receiver.close();

  // Every element any nft command was given, from the JSON documents the runner saw.
  const elements = new Set<string>();
  for (const call of calls) {
    assert.equal(call.file, 'nft');
    const args = call.args.join(' ');
    assert.ok(['-j -f -', '-j -t list ruleset inet', ...['v4', 'v6', 'v4net', 'v6net'].map((set) => `-j list set inet rpipe ${set}`)].includes(args),
      `a fixed argument vector, never one built from input: ${args}`);
    if (call.input === undefined) continue;
    const doc = JSON.parse(call.input) as { nftables: Json[] };
    for (const cmd of doc.nftables) {
      const element = ((cmd.add ?? cmd.delete) as Json | undefined)?.element as { name: string; elem: unknown[] } | undefined;
      for (const e of element?.elem ?? []) {
        const val = (e as { elem?: { val: unknown } }).elem?.val ?? e;
        // Hash set v6 holds IPv6 clients by their network's first address.
        const text = typeof val === 'string' ? val : `${(val as { prefix: { addr: string; len: number } }).prefix.addr}/${(val as { prefix: { len: number } }).prefix.len}`;
        elements.add(element?.name === 'v6' ? `${text}/${OPTS.ipv6Prefix}` : text);
      }
    }
  }
  const want = [...expectedClients].sort();
  assert.deepEqual([...elements].sort(), want, 'nft was given exactly the clients of accepted strings');
  const held = (await kernelValues(n, 'rpipe')).length;
  assert.equal(held, want.length, 'and the kernel holds them');
  t.diagnostic(`seed ${seed}: ${strings.length} strings sent twice each in ${Math.round(performance.now() - started)} ms; ${want.length} clients blocked, ${calls.length} nft runs`);
  await n.run('nft', ['delete', 'table', 'inet', 'rpipe']);
});
