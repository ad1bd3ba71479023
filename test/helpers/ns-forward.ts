import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Namespace } from './netns.js';

/**
 * A unix socket on the host's file system whose connections are forwarded to
 * a TCP port on 127.0.0.1 inside a namespace. The test process cannot enter
 * a namespace itself; through this it writes raw bytes to a receiver there
 * (byte by byte, pipelined, half-closed), and the receiver sees a loopback peer.
 */
export interface Forward {
  /** The unix socket to connect to. */
  readonly path: string;
  /** Opens a connection that reaches 127.0.0.1:port inside the namespace. */
  connect(): Socket;
  /** Stops the forwarder (by its PID) and removes its directory. */
  close(): Promise<void>;
}

// Runs inside the namespace: one TCP connection per accepted unix connection,
// bytes copied both ways, half-close passed on.
const SCRIPT = `
const net = require('node:net');
const [path, port] = process.argv.slice(1);
const server = net.createServer({ allowHalfOpen: true }, (c) => {
  const u = net.connect({ port: Number(port), host: '127.0.0.1', allowHalfOpen: true, noDelay: true });
  const done = () => { c.destroy(); u.destroy(); };
  c.on('error', done); u.on('error', done);
  c.on('close', done); u.on('close', done);
  c.pipe(u); u.pipe(c);
});
server.maxConnections = 100000;
server.listen(path, () => process.stdout.write('ready\\n'));
process.on('SIGTERM', () => process.exit(0));
`;

/** Starts a forwarder into `ns` for `port`; resolves once it listens. */
export async function forwardInto(ns: Namespace, port: number): Promise<Forward> {
  const dir = mkdtempSync(join(tmpdir(), 'rated-fwd-'));
  const path = join(dir, 'fwd.sock');
  const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e', SCRIPT, path, String(port)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const ready = await new Promise<boolean>((resolve) => {
    createInterface({ input: child.stdout }).once('line', (line) => resolve(line === 'ready'));
    void exited.then(() => resolve(false));
  });
  const close = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  if (!ready) {
    await close();
    throw new Error(`the forwarder into ${ns.name} did not start: ${stderr.trim()}`);
  }
  return { path, connect: () => connect(path), close };
}

/** What a raw exchange gave back: the bytes received, and whether the peer closed the connection. */
export interface RawReply {
  readonly text: string;
  readonly closed: boolean;
  /** HTTP status codes found at the start of each response, in order. */
  readonly statuses: number[];
}

/**
 * Writes `payload` on a fresh connection and collects the answer until the
 * peer closes, `responses` responses have arrived, or `waitMs` passes.
 */
export function exchange(fwd: Forward, payload: Buffer | string, options: { responses?: number; waitMs?: number } = {}): Promise<RawReply> {
  const want = options.responses ?? 1;
  const waitMs = options.waitMs ?? 5000;
  return new Promise((resolve) => {
    const socket = fwd.connect();
    let text = '';
    let settled = false;
    const finish = (closed: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ text, closed, statuses: statusesOf(text) });
    };
    const timer = setTimeout(() => finish(false), waitMs);
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (statusesOf(text).length >= want && completeResponses(text) >= want) {
        // Give a closing peer a moment to say so, so `closed` is meaningful.
        setTimeout(() => finish(socket.readableEnded), 50);
      }
    });
    socket.on('end', () => finish(true));
    socket.on('close', () => finish(true));
    // The peer may close while we still write (431 on a huge header): what it answered counts.
    socket.on('error', () => undefined);
    socket.write(payload);
  });
}

/** Status codes of the responses in `text` (a 100 Continue is not a response). */
export function statusesOf(text: string): number[] {
  const out: number[] = [];
  for (const m of text.matchAll(/HTTP\/1\.[01] (\d{3}) /g)) {
    const code = Number(m[1]);
    if (code !== 100) out.push(code);
  }
  return out;
}

/** Responses whose headers have ended. */
function completeResponses(text: string): number {
  return text.split('\r\n\r\n').length - 1 - (text.match(/HTTP\/1\.[01] 100 /g)?.length ?? 0);
}
