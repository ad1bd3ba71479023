import { chmodSync, chownSync, mkdirSync, readFileSync, unlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { timingSafeEqual } from 'node:crypto';
import { isLoopback, parseAddress } from '../address.js';
import { RatedError } from '../errors.js';
import { RateLimitedLog, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { boundField, parseMethod, parseStatus, type HitSink } from './hit.js';

export interface HttpReceiverOptions {
  readonly address: string;
  readonly port: number;
  /** Header carrying the client address (X-IP). */
  readonly header: string;
  /** When set, every notification must carry it in X-Rated-Token. */
  readonly token: string | null;
  /** A unix socket path to listen on instead of address:port (mode 0660). */
  readonly socket?: string | null;
  /** The group the socket is given, so that nginx's user can write it. */
  readonly socketGroup?: string | null;
  readonly sink: HitSink;
  readonly metrics: Metrics;
  readonly log: Logger;
}

const RECEIVER = 'http';
/** Largest body a notification may declare; nginx sends none. */
const MAX_BODY = 4096;

/**
 * Connection slots. A connection is *proven* once it has carried an accepted
 * notification (nginx's pooled upstream connections); until then it shares a
 * small pool with every other newcomer, where the oldest gives way to the
 * newest. Whoever floods the receiver with connections that send nothing
 * valid can only push its own out, never nginx's, and a new nginx connection
 * gets in to prove itself.
 */
export const CONNECTION_LIMITS = {
  /** Connections of every kind together: bounds file descriptors. */
  total: 8192,
  /** Connections that have not carried an accepted notification yet. */
  unproven: 512,
  /** Connections from one non-loopback address (all local peers share 127.0.0.1, nginx among them). */
  perAddress: 64,
} as const;

// Limits that cut slow or oversized requests off quickly (HARDENING §4 rows 31-39).
const SERVER_OPTIONS = {
  maxHeaderSize: 8192,
  requestTimeout: 5000,
  headersTimeout: 5000,
  // Longer than nginx's upstream keepalive_timeout (60s), so nginx closes idle connections first.
  keepAliveTimeout: 75_000,
  connectionsCheckingInterval: 1000,
  insecureHTTPParser: false,
  // Node would answer a request without Host itself, before the handler could count it; we never read Host.
  requireHostHeader: false,
};

/** The HTTP receiver for nginx `post_action` notifications. */
export class HttpReceiver {
  private readonly server: Server;
  private readonly headerName: string;
  private readonly token: Buffer | null;
  private readonly trusted = new WeakSet<Socket>();
  private readonly proven = new WeakSet<Socket>();
  /** Unproven connections, oldest first. */
  private readonly unproven = new Set<Socket>();
  private readonly perAddress = new Map<string, number>();
  private readonly warn: RateLimitedLog;

  constructor(private readonly options: HttpReceiverOptions) {
    this.headerName = options.header.toLowerCase();
    this.token = options.token === null ? null : Buffer.from(options.token);
    this.warn = new RateLimitedLog(options.log);
    this.server = createServer(SERVER_OPTIONS, (req, res) => this.handle(req, res));
    this.server.maxConnections = CONNECTION_LIMITS.total;
    this.server.on('connection', (socket: Socket) => this.admit(socket));
    // Without a listener Node drops a CONNECT silently; answer and count it like any other method.
    this.server.on('connect', (_req: IncomingMessage, socket: Socket) => {
      // The socket is ours now, errors included: a reset must not become an uncaught exception.
      socket.on('error', () => socket.destroy());
      this.reject('method', undefined);
      socket.end('HTTP/1.1 405 Method Not Allowed\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      socket.destroySoon();
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      const code = err.code ?? 'unknown';
      const status = code === 'HPE_HEADER_OVERFLOW' ? 431 : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      this.reject(code === 'ECONNRESET' ? 'reset' : status === 431 ? 'too-large' : status === 408 ? 'timeout' : 'malformed', undefined);
      if (socket.writable && code !== 'ECONNRESET') {
        socket.end(`HTTP/1.1 ${status} ${status === 431 ? 'Request Header Fields Too Large' : status === 408 ? 'Request Timeout' : 'Bad Request'}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      }
      socket.destroySoon();
    });
  }

  /** Starts listening; throws a RatedError (BIND_FAILED) with the cause. */
  async listen(): Promise<void> {
    const path = this.options.socket ?? null;
    const where = path === null ? `${this.options.address}:${this.options.port}` : path;
    if (path !== null) await prepareSocket(path);
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(new RatedError('BIND_FAILED', `receivers.http: cannot listen on ${where}: ${err.code ?? err.message}`));
      };
      this.server.once('error', onError);
      const done = (): void => {
        this.server.off('error', onError);
        resolve();
      };
      if (path === null) this.server.listen(this.options.port, this.options.address, done);
      else this.server.listen(path, done);
    });
    if (path !== null) {
      // Only the owner and the group (nginx's user) may connect.
      chmodSync(path, 0o660);
      const group = this.options.socketGroup ?? null;
      if (group !== null) {
        const gid = groupId(group);
        if (gid === null) throw new RatedError('BIND_FAILED', `receivers.http.socketGroup: no group ${JSON.stringify(group)} on this host`);
        chownSync(path, process.getuid?.() ?? 0, gid);
      }
    }
  }

  /** The address actually bound, e.g. `127.0.0.1:8080`, or `unix:PATH`. */
  get endpoint(): string {
    const a = this.server.address();
    if (typeof a === 'string') return `unix:${a}`;
    return a && typeof a === 'object' ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : '';
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    res.sendDate = false;
    const method = req.method;
    if (method !== 'GET' && method !== 'HEAD' && method !== 'POST') return this.answer(res, 405, 'method', undefined);
    if (this.token === null && !this.trusted.has(req.socket)) return this.answer(res, 403, 'peer', req.socket.remoteAddress);

    // One pass over the raw headers: repeated X-IP headers must be seen, not joined.
    const raw = req.rawHeaders;
    let ip: string | undefined;
    let ipCount = 0;
    let xMethod: string | undefined;
    let xStatus: string | undefined;
    let xHost: string | undefined;
    let xUri: string | undefined;
    let token: string | undefined;
    let body = false;
    let bodyLength = 0;
    for (let i = 0; i < raw.length; i += 2) {
      const name = (raw[i] as string).toLowerCase();
      const value = raw[i + 1] as string;
      if (name === this.headerName) {
        ip = value;
        ipCount++;
      } else if (name.charCodeAt(0) === 120 /* x */) {
        if (name === 'x-method') xMethod = value;
        else if (name === 'x-status') xStatus = value;
        else if (name === 'x-host') xHost = value;
        else if (name === 'x-uri') xUri = value;
        else if (name === 'x-rated-token') token = value;
      } else if (name === 'content-length') {
        body = true;
        bodyLength = Number(value);
      } else if (name === 'transfer-encoding') {
        body = true;
        bodyLength = Infinity;
      }
    }
    if (body) {
      // We never read a body: answer and close so nothing is left on the connection.
      res.shouldKeepAlive = false;
      if (!(bodyLength <= MAX_BODY)) return this.answer(res, 413, 'body', undefined);
    }
    if (this.token !== null && !this.tokenMatches(token)) return this.answer(res, 403, 'token', undefined);
    if (ipCount > 1) return this.answer(res, 400, 'repeated-header', undefined);
    if (ipCount === 0) {
      // Compatibility with the 2014 tool: GET /<ip> without the header.
      const url = req.url ?? '';
      if (url.length < 2 || url.charCodeAt(0) !== 47 /* / */) return this.answer(res, 400, 'no-address', undefined);
      ip = url.slice(1);
    }
    const text = ip as string;
    if (text === 'unix:') {
      this.options.metrics.ignored.inc(`${RECEIVER}\tunix-socket`);
      this.prove(req.socket);
      return this.answer(res, 204, null, undefined);
    }
    const address = parseAddress(text);
    if (address === null) return this.answer(res, 400, 'bad-address', text);
    this.options.metrics.received.inc(RECEIVER);
    const outcome = this.options.sink({
      ip: address,
      method: parseMethod(xMethod),
      status: parseStatus(xStatus),
      host: boundField(xHost, 256),
      uri: boundField(xUri),
      at: performance.now(),
    });
    if (outcome === 'allowed') this.options.metrics.ignored.inc(`${RECEIVER}\tallow-list`);
    this.prove(req.socket);
    res.statusCode = 204;
    res.end();
  }

  /** Takes a new connection into the unproven pool, making room by closing the oldest newcomer. */
  private admit(socket: Socket): void {
    const peer = socket.remoteAddress;
    // On the unix socket the file's mode and group decide who may connect.
    if (this.options.socket || isLoopback(peer)) this.trusted.add(socket);
    else if (peer !== undefined) {
      const n = (this.perAddress.get(peer) ?? 0) + 1;
      if (n > CONNECTION_LIMITS.perAddress) {
        this.reject('connections-per-address', peer);
        socket.destroy();
        return;
      }
      this.perAddress.set(peer, n);
      socket.once('close', () => {
        const left = (this.perAddress.get(peer) ?? 1) - 1;
        if (left <= 0) this.perAddress.delete(peer);
        else this.perAddress.set(peer, left);
      });
    }
    if (this.unproven.size >= CONNECTION_LIMITS.unproven) {
      const oldest = this.unproven.values().next().value as Socket;
      this.unproven.delete(oldest);
      this.reject('connections-unproven', undefined);
      oldest.destroy();
    }
    this.unproven.add(socket);
    socket.once('close', () => this.unproven.delete(socket));
    // Node times out a connection that sends nothing at all only after keepAliveTimeout, if ever.
    socket.setTimeout(SERVER_OPTIONS.headersTimeout);
  }

  private prove(socket: Socket): void {
    if (this.proven.has(socket)) return;
    this.proven.add(socket);
    this.unproven.delete(socket);
  }

  private tokenMatches(given: string | undefined): boolean {
    if (given === undefined || this.token === null) return false;
    const g = Buffer.from(given);
    return g.length === this.token.length && timingSafeEqual(g, this.token);
  }

  private answer(res: ServerResponse, status: number, reason: string | null, value: string | undefined): void {
    if (reason !== null) this.reject(reason, value);
    res.statusCode = status;
    // A refused request costs its connection: refusals cannot hold slots kept alive.
    if (status >= 400) res.shouldKeepAlive = false;
    res.end();
  }

  private reject(reason: string, value: string | undefined): void {
    this.options.metrics.rejected.inc(`${RECEIVER}\t${reason}`);
    this.warn.warn(`http:${reason}`, value === undefined ? { reason } : { reason, value: value.slice(0, 64) }, 'notification rejected');
  }
}


/** Makes the socket's directory and removes a stale socket file; a live one means another process listens there. */
async function prepareSocket(path: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  const alive = await new Promise<boolean>((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (alive) throw new RatedError('BIND_FAILED', `receivers.http.socket: something already listens on ${path}`);
  try {
    unlinkSync(path);
  } catch {
    // nothing to replace
  }
}

/** The id of a group given by name or number, from /etc/group; null when there is none. */
function groupId(group: string): number | null {
  if (/^\d+$/.test(group)) return Number(group);
  try {
    for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
      const [name, , gid] = line.split(':');
      if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
    }
  } catch {
    // no /etc/group: no names
  }
  return null;
}
