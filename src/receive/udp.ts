import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { isLoopback } from '../address.js';
import { RatedError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { HitSink } from './hit.js';
import { LineIntake, LineParser } from './line.js';

export interface UdpReceiverOptions {
  /** A loopback address (load.ts refuses others: UDP has no handshake, its source can be forged). */
  readonly address: string;
  readonly port: number;
  /** A regex with named groups, or null for the default formats. */
  readonly pattern: string | null;
  readonly sink: HitSink;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** Receive buffer to ask the kernel for, in bytes. @default 8 MiB */
  readonly recvBufferSize?: number;
}

const RECEIVER = 'udp';
/** A burst of small datagrams overflows the kernel's default 208 KiB quickly (HARDENING §4 row 48). */
const RECV_BUFFER = 8 * 1024 * 1024;

/**
 * The UDP receiver for nginx `access_log syslog:server=…` (SPEC §4): one or
 * more access-log lines per datagram, from loopback only. Datagrams the
 * kernel drops because the receive buffer is full are read from
 * /proc/net/udp (the `drops` column of our socket) by `sampleDrops()`.
 */
export class UdpReceiver {
  private readonly socket: Socket;
  private readonly intake: LineIntake;
  private inode: string | null = null;
  private portHex = '';
  /** Kernel drop count at bind: a reused socket number never starts at a foreign count, but be safe. */
  private dropsAtStart = 0;
  /** The receive buffer the kernel granted, as getRecvBufferSize reports it (twice the usable bytes). */
  receiveBuffer = 0;

  constructor(private readonly options: UdpReceiverOptions) {
    this.intake = new LineIntake({
      receiver: RECEIVER,
      parser: new LineParser({ pattern: options.pattern }),
      sink: options.sink,
      metrics: options.metrics,
      log: options.log,
    });
    this.socket = createSocket(options.address.includes(':') ? { type: 'udp6', ipv6Only: true } : { type: 'udp4' });
    this.socket.on('message', (msg, rinfo) => this.datagram(msg, rinfo));
    this.socket.on('error', (err) => {
      // After bind, errors on a UDP socket are transient (ICMP, ENOBUFS): log and go on.
      options.metrics.errors.inc(RECEIVER);
      options.log.warn({ err: err.message }, 'UDP receiver error');
    });
  }

  /** Binds the socket and raises its receive buffer; throws a RatedError (BIND_FAILED) with the cause. */
  async listen(): Promise<void> {
    const { address, port } = this.options;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(new RatedError('BIND_FAILED', `receivers.udp: cannot listen on ${address}:${port}: ${err.code ?? err.message}`));
      };
      this.socket.once('error', onError);
      this.socket.bind(port, address, () => {
        this.socket.off('error', onError);
        resolve();
      });
    });
    const wanted = this.options.recvBufferSize ?? RECV_BUFFER;
    try {
      // The kernel silently caps SO_RCVBUF at net.core.rmem_max; read back what we got.
      this.socket.setRecvBufferSize(wanted);
    } catch (err) {
      this.options.log.warn({ err: (err as Error).message }, 'cannot raise the UDP receive buffer');
    }
    this.receiveBuffer = this.socket.getRecvBufferSize();
    this.options.metrics.udpReceiveBuffer = this.receiveBuffer;
    // Linux reports twice the bytes asked for (the other half is bookkeeping).
    const fields = { requested: wanted, obtained: this.receiveBuffer, rmemMax: readRmemMax() };
    if (this.receiveBuffer < wanted) {
      this.options.log.warn(fields, 'UDP receive buffer smaller than requested: bursts may be lost; raise it with sysctl -w net.core.rmem_max=8388608');
    } else {
      this.options.log.debug(fields, 'UDP receive buffer');
    }
    this.portHex = this.socket.address().port.toString(16).toUpperCase().padStart(4, '0');
    this.inode = findOwnInode(this.procFile(), this.portHex);
    this.dropsAtStart = this.readDrops() ?? 0;
    this.options.metrics.udpDrops = 0;
  }

  /** The address actually bound, e.g. `127.0.0.1:5514`. */
  get endpoint(): string {
    const a = this.socket.address();
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }

  /** Reads the kernel's drop count for our socket into the metrics; returns it (null when it cannot be read). */
  sampleDrops(): number | null {
    const raw = this.readDrops();
    if (raw === null) return null;
    const drops = Math.max(0, raw - this.dropsAtStart);
    this.options.metrics.udpDrops = drops;
    return drops;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      try {
        this.socket.close(() => resolve());
      } catch {
        resolve(); // not bound, or closed already
      }
    });
  }

  private datagram(msg: Buffer, rinfo: RemoteInfo): void {
    if (!isLoopback(rinfo.address)) {
      this.intake.reject('peer', undefined, rinfo.address);
      return;
    }
    if (msg.length === 0) {
      this.intake.reject('empty', undefined);
      return;
    }
    // Latin-1: one char per byte, so non-ASCII never turns into something the validator accepts.
    const text = msg.toString('latin1');
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      const end = nl < 0 ? text.length : nl;
      // Empty pieces between newlines (a trailing LF) are not lines.
      if (end > start) this.intake.line(text.slice(start, end));
      if (nl < 0) return;
      start = nl + 1;
    }
  }

  private procFile(): string {
    return this.options.address.includes(':') ? '/proc/net/udp6' : '/proc/net/udp';
  }

  private readDrops(): number | null {
    if (this.inode === null) this.inode = findOwnInode(this.procFile(), this.portHex);
    if (this.inode === null) return null;
    return dropsOf(this.procFile(), this.portHex, this.inode);
  }
}


function readRmemMax(): number | null {
  try {
    return Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8').trim());
  } catch {
    return null;
  }
}

/** Rows of /proc/net/udp{,6}: `sl local rem st tx:rx tr:when retr uid timeout inode ref pointer drops`. */
function rows(file: string): string[][] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text.split('\n').slice(1).map((l) => l.trim().split(/\s+/)).filter((f) => f.length >= 13);
}

/**
 * The inode of our own socket bound to this port: the row of /proc/net/udp
 * with that local port whose inode is one of this process's file
 * descriptors. Null when not found (no /proc).
 */
function findOwnInode(file: string, portHex: string): string | null {
  const candidates = rows(file).filter((f) => f[1]?.endsWith(`:${portHex}`)).map((f) => f[9] ?? '');
  if (candidates.length === 0) return null;
  const own = new Set<string>();
  try {
    for (const fd of readdirSync('/proc/self/fd')) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
        if (m?.[1]) own.add(m[1]);
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    return null;
  }
  return candidates.find((inode) => own.has(inode)) ?? null;
}

function dropsOf(file: string, portHex: string, inode: string): number | null {
  for (const f of rows(file)) {
    if (f[9] === inode && f[1]?.endsWith(`:${portHex}`)) {
      const n = Number(f[12]);
      return Number.isFinite(n) ? n : null;
    }
  }
  return null;
}
