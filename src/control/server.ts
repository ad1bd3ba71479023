import { mkdirSync, chmodSync, unlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { parseListen } from '../address.js';
import type { ListQuery, ManualBlock } from '../block.js';
import { describe, RatedError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ControlApi } from './api.js';
import { isPermissionError, preparePrivateDir, userSocketPath } from './user-socket.js';

const MAX_BODY = 64 * 1024;
/** A batch of manual blocks (POST /blocks/batch): the CLI sends at most 10,000 entries and 4 MiB at a time. */
export const MAX_BATCH_BODY = 4 * 1024 * 1024;
export const MAX_BATCH_ENTRIES = 10_000;
/** How much of an oversized body is read and dropped so that the 413 reaches the client. */
const DRAIN = 1024 * 1024;

/** The control API: HTTP/1.1 over a unix socket (SPEC §8). */
export class ControlServer {
  private readonly server: Server;

  constructor(private readonly path: string, private readonly api: ControlApi, private readonly log: Logger) {
    this.server = createServer({ requestTimeout: 30_000, headersTimeout: 10_000 }, (req, res) => {
      this.route(req, res).catch((err: unknown) => this.fail(res, err));
    });
  }

  /** Binds the socket, replacing a stale one left by a crash; a live one means another daemon runs. */
  async listen(): Promise<void> {
    try {
      mkdirSync(dirname(this.path), { recursive: true, mode: 0o750 });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw new RatedError('BIND_FAILED', `control.socket: cannot create ${dirname(this.path)}: ${code}; run as root or give --socket PATH`, { cause: err });
    }
    await refuseIfRunning(this.path);
    try {
      unlinkSync(this.path);
    } catch {
      // nothing to replace
    }
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', (err: NodeJS.ErrnoException) => {
        reject(new RatedError('BIND_FAILED', `control.socket: cannot listen on ${this.path}: ${err.code ?? err.message}`, { cause: err }));
      });
      this.server.listen(this.path, () => resolve());
    });
    chmodSync(this.path, 0o660);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = pathOf(req.url ?? '/');
    const method = req.method ?? 'GET';
    if (path === '/status' && method === 'GET') { send(res, 200, await this.api.status()); return; }
    if (path === '/metrics' && method === 'GET') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(await this.api.metrics());
      return;
    }
    if (path === '/blocks') {
      if (method === 'GET') return sendList(res, await this.api.blocks(listQuery(req.url ?? '/')));
      if (method === 'POST') {
        const result = await this.api.block(manualBlock(await readJson(req)));
        send(res, result.outcome === 'added' ? 201 : 200, { ...result.block, outcome: result.outcome }); return;
      }
      if (method === 'DELETE') { send(res, 200, { lifted: await this.api.flush() }); return; }
      send(res, 405, { error: `${method} is not allowed on /blocks` }); return;
    }
    if (path === '/blocks/batch' && method === 'POST') {
      const body = await readJson(req, MAX_BATCH_BODY);
      const { blocks, source, dryRun } = body;
      if (!Array.isArray(blocks) || blocks.length > MAX_BATCH_ENTRIES) throw new RatedError('USAGE', `blocks: expected an array of at most ${MAX_BATCH_ENTRIES} {ip, for?, reason?}`);
      if (source !== undefined && source !== 'manual' && source !== 'migrated') throw new RatedError('USAGE', 'source: expected manual or migrated');
      if (dryRun !== undefined && typeof dryRun !== 'boolean') throw new RatedError('USAGE', 'dryRun: expected true or false');
      send(res, 200, await this.api.blockMany(blocks.map((b: unknown) => manualBlock(b)), source ?? 'manual', dryRun ?? false)); return;
    }
    if (path === '/top' && method === 'GET') {
      const params = new URL(req.url ?? '/', 'http://rated').searchParams;
      const n = (name: string): number => {
        const v = params.get(name) ?? '10';
        if (!/^[1-9]\d{0,2}$/.test(v) || Number(v) > 100) throw new RatedError('USAGE', `${name}: expected a whole number from 1 to 100, got ${JSON.stringify(v.slice(0, 16))}`);
        return Number(v);
      };
      send(res, 200, await this.api.top(n('clients'), n('blocks'))); return;
    }
    if (path.startsWith('/explain/') && method === 'GET') { send(res, 200, await this.api.explain(decodeTarget(path.slice('/explain/'.length)))); return; }
    if (path.startsWith('/blocks/') && method === 'DELETE') {
      const ip = decodeTarget(path.slice('/blocks/'.length));
      const lifted = await this.api.unblock(ip);
      if (!lifted) { send(res, 404, { error: `${ip} is not blocked`, code: 'NOT_FOUND' }); return; }
      send(res, 200, lifted); return;
    }
    send(res, 404, { error: `no such endpoint: ${method} ${path}` });
  }

  private fail(res: ServerResponse, err: unknown): void {
    if (err instanceof RatedError) {
      const status = err.code === 'USAGE' || err.code === 'CONFIG' ? 400 : err.code === 'TOO_LARGE' ? 413
        : err.code === 'REFUSED' ? 409 : err.code === 'NOT_FOUND' ? 404 : 500;
      if (status === 413) res.shouldKeepAlive = false;
      send(res, status, { error: err.message, code: err.code });
      return;
    }
    this.log.error({ err: describe(err) }, 'control request failed');
    send(res, 500, { error: describe(err), code: 'INTERNAL' });
  }
}

/** A manual block in a request body: {ip, for?, reason?}. */
function manualBlock(body: unknown): ManualBlock {
  if (!body || typeof body !== 'object') throw new RatedError('USAGE', 'expected {ip, for?, reason?}');
  const { ip, for: forValue, reason } = body as Record<string, unknown>;
  if (typeof ip !== 'string') throw new RatedError('USAGE', 'ip: expected an address or CIDR network');
  if (forValue !== undefined && typeof forValue !== 'string' && typeof forValue !== 'number') {
    throw new RatedError('USAGE', 'for: expected a duration like "1h"');
  }
  if (reason !== undefined && typeof reason !== 'string') throw new RatedError('USAGE', 'reason: expected text');
  return { ip, ...(forValue === undefined ? {} : { for: forValue }), ...(reason === undefined ? {} : { reason }) };
}

/** The path of a request target; a target no URL parser accepts is the client's error. */
function pathOf(target: string): string {
  try {
    return new URL(target, 'http://rated').pathname;
  } catch {
    throw new RatedError('USAGE', `malformed request target ${JSON.stringify(target.slice(0, 64))}`);
  }
}

/** The address or CIDR network in a /blocks/<ip> path; malformed percent-encoding is the client's error. */
function decodeTarget(encoded: string): string {
  try {
    return decodeURIComponent(encoded);
  } catch {
    throw new RatedError('USAGE', `expected an IP address or CIDR network, got ${JSON.stringify(encoded.slice(0, 64))}`);
  }
}

/** `?sort=dropped|expires|since&limit=N` of GET /blocks. */
function listQuery(target: string): ListQuery {
  const params = new URL(target, 'http://rated').searchParams;
  const sort = params.get('sort');
  const limit = params.get('limit');
  if (sort !== null && sort !== 'dropped' && sort !== 'expires' && sort !== 'since') {
    throw new RatedError('USAGE', `sort: expected dropped, expires or since, got ${JSON.stringify(sort.slice(0, 32))}`);
  }
  if (limit !== null && !/^[1-9]\d{0,8}$/.test(limit)) throw new RatedError('USAGE', `limit: expected a whole number from 1, got ${JSON.stringify(limit.slice(0, 32))}`);
  return { ...(sort === null ? {} : { sort }), ...(limit === null ? {} : { limit: Number(limit) }) };
}

/**
 * Sends a listing as a JSON array with one block per line, written as the
 * socket takes it: the first blocks arrive at once and memory stays bounded
 * whatever the number of blocks (SPEC §6).
 */
async function sendList(res: ServerResponse, views: Iterable<unknown>): Promise<void> {
  res.writeHead(200, { 'content-type': 'application/json' });
  let chunk: string[] = [];
  let first = true;
  const flush = async (): Promise<void> => {
    if (chunk.length === 0) return;
    const ok = res.write(chunk.join(''));
    chunk = [];
    if (!ok) await new Promise<void>((resolve) => {
      res.once('drain', resolve);
      res.once('close', resolve);
    });
  };
  res.write('[');
  for (const v of views) {
    if (res.destroyed) return;
    chunk.push(`${first ? '\n' : ',\n'}${JSON.stringify(v)}`);
    first = false;
    if (chunk.length >= 1000) await flush();
  }
  await flush();
  res.end(first ? ']\n' : '\n]\n');
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readJson(req: IncomingMessage, max = MAX_BODY): Promise<Record<string, unknown>> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    // Read (and drop) the rest of a body over the limit before answering:
    // closing with unread bytes makes the kernel reset the connection, and the
    // client would never see the 413. Beyond DRAIN the connection is cut.
    if (size > max + DRAIN) {
      req.socket.destroy();
      throw new RatedError('TOO_LARGE', `request body over ${max / 1024} KiB`);
    }
    if (size <= max) chunks.push(chunk as Buffer);
  }
  if (size > max) throw new RatedError('TOO_LARGE', `request body over ${max / 1024} KiB`);
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  try {
    const value: unknown = JSON.parse(text);
    if (value && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw new RatedError('USAGE', 'expected a JSON object body');
}

/** True when something accepts connections on the unix socket. */
export function isAlive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * Binds the control socket. A dry run by an ordinary user, who may not create
 * the configured one (under /run), uses the user's own socket instead
 * (`fallback`); the CLI looks there too. With `metricsListen`, also serves
 * GET /metrics over TCP. Returns where the socket is, and how to close both.
 */
export async function listenControl(
  configured: string, api: ControlApi, log: Logger, fallback: boolean, metricsListen: string | null = null,
): Promise<{ socket: string; close: () => Promise<void> }> {
  const { server, socket } = await bindControl(configured, api, log, fallback);
  let metrics: Server | null;
  try {
    metrics = await listenMetrics(metricsListen, () => api.metrics(), log);
  } catch (err) {
    await server.close();
    throw err;
  }
  return {
    socket,
    close: async () => {
      await server.close();
      await new Promise<void>((resolve) => {
        if (!metrics) return resolve();
        metrics.close(() => resolve());
        metrics.closeAllConnections();
      });
    },
  };
}

async function bindControl(configured: string, api: ControlApi, log: Logger, fallback: boolean): Promise<{ server: ControlServer; socket: string }> {
  try {
    const server = new ControlServer(configured, api, log);
    await server.listen();
    return { server, socket: configured };
  } catch (err) {
    const own = fallback ? userSocketPath() : null;
    if (own === null || own === configured || !isPermissionError(err)) throw err;
    preparePrivateDir(own);
    const server = new ControlServer(own, api, log);
    await server.listen();
    log.warn({ configured, control: own, err: describe(err) }, 'a dry run without root uses its own control socket; rated commands find it');
    return { server, socket: own };
  }
}

/** Throws ALREADY_RUNNING when a daemon answers on `socket`. */
export async function refuseIfRunning(socket: string): Promise<void> {
  if (await isAlive(socket)) throw new RatedError('ALREADY_RUNNING', `another rated is already running on ${socket}; stop it first (rated status)`);
}

/**
 * `metrics.listen` (SPEC §8): Prometheus cannot scrape a unix socket, so
 * GET /metrics is served over TCP as well, and nothing else (404). Returns
 * null when not configured.
 */
async function listenMetrics(listen: string | null, render: () => Promise<string>, log: Logger): Promise<Server | null> {
  const at = listen === null ? null : parseListen(listen);
  if (at === null) return null;
  const server = createServer({ requestTimeout: 10_000, headersTimeout: 5_000 }, (req, res) => {
    if (req.method !== 'GET' || pathOf(req.url ?? '/') !== '/metrics') return send(res, 404, { error: 'only GET /metrics is served here' });
    render().then((text) => {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(text);
    }, (err: unknown) => {
      log.error({ err: describe(err) }, 'metrics request failed');
      send(res, 500, { error: 'metrics unavailable' });
    });
  });
  server.maxConnections = 64;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(new RatedError('BIND_FAILED', `metrics.listen: cannot listen on ${listen ?? ''}: ${err.code ?? err.message}`, { cause: err }));
    });
    server.listen(at.port, at.address, () => resolve());
  });
  return server;
}
