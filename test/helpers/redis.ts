import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import type { Namespace } from './netns.js';
import { waitFor } from './wait-for.js';

/** A redis-server this process started; stopped by its PID only. */
export interface RedisServer {
  readonly host: string;
  readonly port: number;
  /** `redis://host:port` (IPv6 hosts in brackets). */
  readonly url: string;
  /** PID of the running server; changes after `restart()`. */
  readonly pid: number;
  /** Runs `redis-cli -h HOST -p PORT ARGS` where the server runs; returns stdout, throws on failure. */
  cli(args: readonly string[]): Promise<string>;
  /** Sends a signal (SIGKILL by default) and, unless it is SIGSTOP or SIGCONT, waits for the exit; keeps the data directory. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the server again on the same address, port and directory, and waits for PONG. */
  restart(): Promise<void>;
  /** Stops it for good and removes its directory; idempotent. */
  stop(): Promise<void>;
}

export interface RedisOptions {
  /** Runs the server inside this namespace; else in the test's own. */
  readonly namespace?: Namespace;
  /** Address to bind. @default 127.0.0.1 */
  readonly host?: string;
  /** @default a free port (only meaningful outside a namespace; 6379 inside one) */
  readonly port?: number;
  /** Starts it with `cluster-enabled yes`. */
  readonly cluster?: boolean;
  /** Starts it with `requirepass`; `cli` then authenticates. */
  readonly password?: string;
  /** Leaves Redis's protected mode on (no bind, no password: clients from other addresses are refused). */
  readonly protectedMode?: boolean;
}

/** Servers started and not stopped yet, killed if the test process ends first, and their directories. */
const live = new Map<number, ChildProcess>();
const dirs = new Set<string>();
let safetyNet = false;

function installSafetyNet(): void {
  if (safetyNet) return;
  safetyNet = true;
  process.on('exit', () => {
    for (const child of live.values()) child.kill('SIGKILL');
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });
}

/** A TCP port nobody listens on right now, on the loopback of the test's namespace. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Starts a redis-server without persistence in a temporary directory and waits until it answers PING. */
export async function startRedis(options: RedisOptions = {}): Promise<RedisServer> {
  installSafetyNet();
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? (options.namespace ? 6379 : await freePort());
  const dir = mkdtempSync(join(tmpdir(), 'rated-redis-'));
  dirs.add(dir);
  const ns = options.namespace;
  const args = [
    '--port', String(port), ...(options.protectedMode ? [] : ['--bind', host]), '--dir', dir, '--save', '', '--appendonly', 'no',
    '--daemonize', 'no', '--protected-mode', options.protectedMode ? 'yes' : 'no', '--logfile', join(dir, 'redis.log'),
    ...(options.password !== undefined ? ['--requirepass', options.password] : []),
    ...(options.cluster ? ['--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'), '--cluster-node-timeout', '2000'] : []),
  ];
  const auth = options.password !== undefined ? ['-a', options.password, '--no-auth-warning'] : [];
  // In protected mode only loopback clients are served.
  const cliHost = options.protectedMode ? '127.0.0.1' : host;
  const cliPrefix = (a: readonly string[]): [string, string[]] => ns
    ? ['ip', ['netns', 'exec', ns.name, 'redis-cli', '-h', cliHost, '-p', String(port), ...auth, ...a]]
    : ['redis-cli', ['-h', cliHost, '-p', String(port), ...auth, ...a]];
  const cli = async (a: readonly string[]): Promise<string> => {
    const [cmd, full] = cliPrefix(a);
    const r = await execa(cmd, full, { reject: false, timeout: 10_000, input: '' });
    if (r.exitCode !== 0 || /^(ERR|WRONGTYPE|NOSCRIPT)/.test(r.stdout)) {
      throw new Error(`redis-cli ${a.join(' ')} failed (${String(r.exitCode)}): ${r.stdout}${r.stderr}`);
    }
    return r.stdout;
  };

  let child: ChildProcess;
  let exited: Promise<void>;
  const launch = async (): Promise<void> => {
    // `ip netns exec` execs the command, so the PID is redis-server's own.
    child = ns
      ? spawn('ip', ['netns', 'exec', ns.name, 'redis-server', ...args], { stdio: 'ignore' })
      : spawn('redis-server', args, { stdio: 'ignore' });
    const c = child;
    if (c.pid === undefined) throw new Error('redis-server did not start');
    live.set(c.pid, c);
    exited = new Promise((resolve) => {
      c.once('exit', () => {
        if (c.pid !== undefined) live.delete(c.pid);
        resolve();
      });
    });
    await waitFor(async () => (c.exitCode === null ? (await cli(['PING'])) === 'PONG' : 'exited'), {
      timeoutMs: 10_000, intervalMs: 50, what: `redis-server on ${host}:${port}`,
    }).then((v) => {
      if (v === 'exited') throw new Error(`redis-server on ${host}:${port} exited at start; see ${join(dir, 'redis.log')}`);
    });
  };
  await launch();

  let stopped = false;
  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    // SIGSTOP and SIGCONT leave it running.
    if (signal !== 'SIGSTOP' && signal !== 'SIGCONT') await exited;
  };
  return {
    host,
    port,
    url: `redis://${host.includes(':') ? `[${host}]` : host}:${port}`,
    get pid() {
      return child.pid ?? -1;
    },
    cli,
    kill,
    restart: launch,
    async stop() {
      if (stopped) return;
      stopped = true;
      // A stopped process still dies of SIGKILL.
      await kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      dirs.delete(dir);
    },
  };
}

/** Three masters with `cluster-enabled yes`, joined by `redis-cli --cluster create`. */
export interface RedisCluster {
  readonly nodes: readonly RedisServer[];
  /** The masters' URLs. */
  readonly urls: readonly string[];
  stop(): Promise<void>;
}

/** Starts `ports.length` cluster masters on `host` and waits until the cluster says `cluster_state:ok` everywhere. */
export async function startRedisCluster(options: { namespace?: Namespace; host?: string; ports?: readonly number[] } = {}): Promise<RedisCluster> {
  const host = options.host ?? '127.0.0.1';
  const ports = options.ports ?? [await freePort(), await freePort(), await freePort()];
  const nodes: RedisServer[] = [];
  const stop = async (): Promise<void> => {
    for (const n of nodes) await n.stop();
  };
  try {
    for (const port of ports) nodes.push(await startRedis({ ...options, host, port, cluster: true }));
    const first = nodes[0] as RedisServer;
    await first.cli(['--cluster', 'create', ...nodes.map((n) => `${host}:${n.port}`), '--cluster-replicas', '0', '--cluster-yes']);
    for (const n of nodes) {
      await waitFor(async () => (await n.cli(['CLUSTER', 'INFO'])).includes('cluster_state:ok'), {
        timeoutMs: 15_000, intervalMs: 100, what: `cluster_state:ok on ${host}:${n.port}`,
      });
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { nodes, urls: nodes.map((n) => n.url), stop };
}
