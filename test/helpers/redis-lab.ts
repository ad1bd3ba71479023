import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { kernelSets } from './kernel-set.js';
import { createNamespace, type Namespace } from './netns.js';
import { startRated, type Rated } from './rated.js';
import { waitFor } from './wait-for.js';

/**
 * A small network for the multi-server tests, built only of namespaces the
 * test creates: a hub namespace with a bridge (where Redis runs, on
 * 10.77.0.1), a namespace per web server (10.77.0.11, .12, …) and one for an
 * offending client (10.77.0.66), all on the bridge.
 */
export interface Lab {
  readonly dir: string;
  readonly hub: Namespace;
  readonly offender: Namespace;
  readonly hubAddress: string;
  readonly offenderAddress: string;
  /** The web servers' namespaces and addresses, by name. */
  readonly servers: ReadonlyMap<string, { readonly ns: Namespace; readonly address: string }>;
  /** The control socket of server `name`'s daemon. */
  socket(name: string): string;
  /** Writes a configuration for server `name` with this `redis:` section (YAML flow text) and starts rated there. */
  start(name: string, redis: string, extra?: readonly string[]): Promise<Rated>;
  /** Stops every rated started, deletes the namespaces and the directory. */
  cleanup(): Promise<void>;
}

export const RULE = { name: 'flood', limit: 5, window: '60s', block: '10m' } as const;
/** An address on the allow list of every server. */
export const OFFICE = '10.77.0.200';
/** The receiver every server listens on, inside its namespace. */
export const RECEIVER = 'http://127.0.0.1:8080/';

async function ip(args: readonly string[]): Promise<void> {
  const r = await execa('ip', args, { reject: false, input: '' });
  if (r.exitCode !== 0) throw new Error(`ip ${args.join(' ')} failed: ${r.stderr}`);
}

export async function createLab(servers: readonly string[]): Promise<Lab> {
  const dir = mkdtempSync(join(tmpdir(), 'rated-redis-lab-'));
  // Namespaces and servers have their own safety nets; this removes the files if the run is cut short.
  const removeDir = (): void => rmSync(dir, { recursive: true, force: true });
  process.once('exit', removeDir);
  const namespaces: Namespace[] = [];
  const started: Rated[] = [];
  const tag = `rb${process.pid % 10_000}`;
  let links = 0;
  const join_ = async (ns: Namespace, address: string): Promise<void> => {
    const outside = `${tag}v${++links}`;
    await ip(['-n', hubNs.name, 'link', 'add', outside, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.name]);
    await ip(['-n', hubNs.name, 'link', 'set', outside, 'master', 'br0', 'up']);
    await ip(['-n', ns.name, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
    await ip(['-n', ns.name, 'link', 'set', 'eth0', 'up']);
  };
  const hubNs = await createNamespace('rtd-hub');
  namespaces.push(hubNs);
  const cleanup = async (): Promise<void> => {
    const problems: unknown[] = [];
    for (const r of started) await r.stop().catch((err: unknown) => problems.push(err));
    for (const ns of namespaces.reverse()) await ns.delete().catch((err: unknown) => problems.push(err));
    removeDir();
    process.removeListener('exit', removeDir);
    if (problems.length > 0) throw new AggregateError(problems, 'lab cleanup failed');
  };
  try {
    await ip(['-n', hubNs.name, 'link', 'add', 'br0', 'type', 'bridge']);
    await ip(['-n', hubNs.name, 'addr', 'add', '10.77.0.1/24', 'dev', 'br0']);
    await ip(['-n', hubNs.name, 'link', 'set', 'br0', 'up']);
    const byName = new Map<string, { ns: Namespace; address: string }>();
    for (const [i, name] of servers.entries()) {
      const ns = await createNamespace(`rtd-${name}`);
      namespaces.push(ns);
      const address = `10.77.0.${11 + i}`;
      await join_(ns, address);
      byName.set(name, { ns, address });
    }
    const offender = await createNamespace('rtd-bad');
    namespaces.push(offender);
    await join_(offender, '10.77.0.66');
    return {
      dir,
      hub: hubNs,
      offender,
      hubAddress: '10.77.0.1',
      offenderAddress: '10.77.0.66',
      servers: byName,
      socket: (name) => join(dir, name, 'rated.sock'),
      async start(name, redis, extra = []) {
        const server = byName.get(name);
        if (!server) throw new Error(`no server ${name}`);
        const home = join(dir, name);
        mkdirSync(home, { recursive: true });
        const config = join(home, 'rated.yml');
        const socket = join(home, 'rated.sock');
        writeFileSync(config, [
          'receivers:',
          '  http: { address: 127.0.0.1, port: 8080 }',
          '  udp: null',
          'rules:',
          `  - { name: ${RULE.name}, limit: ${RULE.limit}, window: ${RULE.window}, block: ${RULE.block} }`,
          `allow: [127.0.0.0/8, "::1/128", ${OFFICE}]`,
          'firewall: { checkInterval: 2s }',
          `control: { socket: ${socket} }`,
          `state: { dir: ${join(home, 'state')} }`,
          `redis: ${redis}`,
          'log: { level: debug }',
          ...extra,
          '',
        ].join('\n'));
        const rated = await startRated({ namespace: server.ns, config, socket });
        started.push(rated);
        return rated;
      },
      cleanup,
    };
  } catch (err) {
    await cleanup().catch(() => {});
    throw err;
  }
}

/** Sends `n` notifications for `client` to the receiver in `ns` (one curl, one connection); returns each one's time in ms. */
export async function notify(ns: Namespace, client: string, n: number): Promise<number[]> {
  const r = await ns.exec('curl', ['-s', '--max-time', '10', '-H', `X-IP: ${client}`,
    '-w', '%{http_code} %{time_total}\\n', ...Array.from({ length: n }, () => ['-o', '/dev/null', RECEIVER]).flat()]);
  const lines = r.stdout.trim().split('\n');
  if (r.exitCode !== 0 || lines.length !== n || !lines.every((l) => l.startsWith('204 '))) {
    throw new Error(`notifications to ${ns.name} failed (${r.exitCode}): ${r.stdout}${r.stderr}`);
  }
  return lines.map((l) => Number(l.split(' ')[1]) * 1000);
}

/** True when one ping from `from` to `to` is answered within a second. */
export async function reachable(from: Namespace, to: string): Promise<boolean> {
  const r = await from.exec('ping', ['-c', '1', '-W', '1', '-n', '-q', to]);
  return r.exitCode === 0;
}

export interface BlockJson { ip: string; rule: string | null; reason: string | null; source: string; since: string | null; expires: string | null; hits: number | null }

/** `rated list --json` of a daemon. */
export async function list(rated: Rated): Promise<BlockJson[]> {
  const r = await rated.cli(['list', '--json']);
  if (r.code !== 0) throw new Error(`rated list failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as BlockJson[];
}

/** `rated status --json` of a daemon. */
export async function status(rated: Rated): Promise<Record<string, unknown> & { redis: RedisStatusJson | null }> {
  const r = await rated.cli(['status', '--json']);
  if (r.code !== 0) throw new Error(`rated status failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown> & { redis: RedisStatusJson | null };
}

export interface RedisStatusJson {
  mode: string;
  url: string | string[];
  up: boolean;
  lastError: string | null;
  node: string;
  counting: { hits: number; batches: number; failed: number; skipped: number; trips: number };
  blocks: { published: number; adopted: number; lifted: number; refused: number; syncs: number };
}

/** Waits until `rated list` shows `ip` (returning its entry), or shows no `ip` when `present` is false. */
export async function waitListed(rated: Rated, ip: string, present = true, timeoutMs = 10_000): Promise<BlockJson | null> {
  const found = await waitFor(async () => {
    const b = (await list(rated)).find((x) => x.ip === ip);
    if (present) return b ?? null;
    return b ? null : { gone: true };
  }, { timeoutMs, intervalMs: 100, what: `${ip} ${present ? 'in' : 'gone from'} rated list` }).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\n--- rated log ---\n${rated.output(30)}`, { cause: err });
  });
  return 'ip' in found ? found : null;
}

/** The daemon's Prometheus text, read from its control socket (unix sockets are not bound to a network namespace). */
export async function metricsText(socket: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path: '/metrics', method: 'GET' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

/** What our nft sets block for IPv4 in a namespace (sets v4 and v4net), as text. */
export async function setElements(ns: Namespace): Promise<string[]> {
  return (await kernelSets(ns)).v4;
}
