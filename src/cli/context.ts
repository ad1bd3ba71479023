import { existsSync } from 'node:fs';
import type { LoadedConfig } from '../config/load.js';
import { callApi, apiError, DaemonDown, type ApiResponse } from '../control/client.js';
import { userSocketPath } from '../control/user-socket.js';
import { RatedError } from '../errors.js';
import type { Config } from '../config/schema.js';

/** Options every command accepts. */
export interface GlobalArgs {
  config?: string;
  socket?: string;
}

const loaded = new WeakMap<GlobalArgs, LoadedConfig>();

/**
 * The configuration as `run` would load it, read once per command. The
 * loader (YAML, the schema) is imported only here: `rated list --socket …`
 * never loads it.
 */
export async function configOf(args: GlobalArgs): Promise<LoadedConfig> {
  let config = loaded.get(args);
  if (!config) {
    const { loadConfig } = await import('../config/load.js');
    loaded.set(args, (config = loadConfig(args.config)));
  }
  return config;
}

/**
 * The control socket: `--socket`, else the configured one, found without
 * loading the schema (a configuration the daemon would refuse is reported
 * by `configOf` once no daemon answers).
 */
export async function socketOf(args: GlobalArgs): Promise<string> {
  if (args.socket !== undefined) return args.socket;
  const config = loaded.get(args);
  if (config) return config.config.control.socket;
  return (await import('../config/read.js')).configuredSocket(args.config);
}

/** Calls the daemon; throws DaemonDown when it is not running, or the API's error. */
export async function api(args: GlobalArgs, method: string, path: string, body?: unknown): Promise<ApiResponse> {
  const res = await callDaemon(args, method, path, body);
  if (res.status >= 400) throw apiError(res);
  return res;
}

/**
 * Calls the configured socket; when no daemon answers there and no --socket
 * was given, tries the socket an ordinary user's dry run falls back to.
 */
function callDaemon(args: GlobalArgs, method: string, path: string, body?: unknown): Promise<ApiResponse> {
  return onDaemon(args, (socket) => callApi(socket, method, path, body));
}

/**
 * Runs `call` on the configured socket; when no daemon answers there and no
 * --socket was given, on the socket an ordinary user's dry run falls back to.
 */
export async function onDaemon<T>(args: GlobalArgs, call: (socket: string) => Promise<T>): Promise<T> {
  const socket = await socketOf(args);
  try {
    return await call(socket);
  } catch (err) {
    const fallback = args.socket === undefined ? userSocketPath() : null;
    const unreachable = err instanceof RatedError && err.code === 'DAEMON_UNREACHABLE';
    // A configuration the daemon would refuse is what to fix first: it names the key (exit 2).
    if (unreachable && args.socket === undefined) await configOf(args);
    if (!unreachable || fallback === null || fallback === socket || !existsSync(fallback)) throw err;
    try {
      return await call(fallback);
    } catch {
      throw err;
    }
  }
}

/**
 * Runs `withDaemon`, or when the daemon is down `withoutDaemon` with the
 * configuration, which it acts on through `offline()` or the backend.
 */
export async function daemonOrKernel<T>(
  args: GlobalArgs,
  withDaemon: () => Promise<T>,
  withoutDaemon: (config: Config) => Promise<T>,
): Promise<T> {
  try {
    return await withDaemon();
  } catch (err) {
    if (!(err instanceof DaemonDown)) throw err;
  }
  return withoutDaemon((await configOf(args)).config);
}

/** Writes one line to stdout. */
export function out(line = ''): void {
  process.stdout.write(`${line}\n`);
}

/** Bytes of lines gathered before they are written. */
const OUT_CHUNK = 64 * 1024;

/**
 * Lines for stdout gathered and written together: at 64 KB, and at the end
 * of each turn of the event loop. Every write to stdout is a system call of
 * its own, and a listing of 1,000,000 lines spent 5 of its 9 s in them; its
 * first lines still show at once.
 */
export class OutBuffer {
  private lines: string[] = [];
  private size = 0;
  private scheduled = false;

  readonly line = (text = ''): void => {
    this.lines.push(text);
    this.size += text.length + 1;
    if (this.size >= OUT_CHUNK) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  };

  readonly flush = (): void => {
    this.scheduled = false;
    if (this.lines.length === 0) return;
    process.stdout.write(`${this.lines.join('\n')}\n`);
    this.lines = [];
    this.size = 0;
  };
}
