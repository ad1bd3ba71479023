import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Namespace } from './netns.js';

/** What a flood did: requests answered, and how long it took. */
export interface FloodResult {
  readonly answered: number;
  readonly ms: number;
}

/** A flood in progress; `done` resolves when every answer is in. */
export interface Flood {
  readonly done: Promise<FloodResult>;
  /** Answers so far, as last reported. */
  answered(): number;
  /** Stops the client (by its PID). */
  stop(): void;
}

// Runs inside the namespace: `connections` keep-alive connections to
// 127.0.0.1:port, each sending its share of the clients `hits` times in
// pipelined chunks and waiting for the answers before the next chunk, so
// the receiver is never buried in more than a chunk per connection.
// Client i is `address(i)`, given as a function body.
const SCRIPT = `
const net = require('node:net');
const [port, count, hits, connections, chunk, addressBody] = process.argv.slice(1);
const address = new Function('i', addressBody);
const total = Number(count), per = Number(hits), conns = Number(connections), size = Number(chunk);
let answered = 0;
const t0 = Date.now();
const report = setInterval(() => process.stdout.write(JSON.stringify({ answered }) + '\\n'), 250);
function run(first, last) {
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(port), '127.0.0.1');
    s.setNoDelay(true);
    let next = first, waiting = 0, tail = '';
    const send = () => {
      if (next >= last) { s.end(); return resolve(); }
      const end = Math.min(last, next + size);
      let text = '';
      for (let i = next; i < end; i++) {
        const req = 'GET / HTTP/1.1\\r\\nHost: rated\\r\\nX-IP: ' + address(i) + '\\r\\n\\r\\n';
        for (let h = 0; h < per; h++) text += req;
      }
      waiting = (end - next) * per;
      next = end;
      s.write(text);
    };
    s.on('data', (d) => {
      const text = tail + d.toString('latin1');
      const n = text.split('\\r\\n\\r\\n').length - 1;
      const at = text.lastIndexOf('\\r\\n\\r\\n');
      tail = (at >= 0 ? text.slice(at + 4) : text).slice(-3);
      waiting -= n; answered += n;
      if (waiting <= 0) send();
    });
    s.on('error', reject);
    s.on('connect', send);
  });
}
const slice = Math.ceil(total / conns);
Promise.all(Array.from({ length: conns }, (_, c) => run(c * slice, Math.min(total, (c + 1) * slice)))).then(() => {
  clearInterval(report);
  process.stdout.write(JSON.stringify({ answered, ms: Date.now() - t0, done: true }) + '\\n');
}, (err) => { process.stderr.write(String(err) + '\\n'); process.exit(1); });
`;

/**
 * Floods the HTTP receiver on 127.0.0.1:port inside `ns` with `count`
 * clients, `hits` notifications each; `address` is the body of a function
 * of `i` returning client i's address.
 */
export function flood(ns: Namespace, port: number, o: { count: number; hits: number; address: string; connections?: number; chunk?: number }): Flood {
  const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e', SCRIPT, String(port), String(o.count), String(o.hits),
    String(o.connections ?? 4), String(o.chunk ?? 250), o.address], { stdio: ['ignore', 'pipe', 'pipe'] });
  let answered = 0;
  let last: FloodResult | null = null;
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  createInterface({ input: child.stdout }).on('line', (line) => {
    const m = JSON.parse(line) as { answered: number; ms?: number; done?: boolean };
    answered = m.answered;
    if (m.done) last = { answered: m.answered, ms: m.ms ?? 0 };
  });
  const done = new Promise<FloodResult>((resolve, reject) => {
    child.once('close', (code) => {
      if (last) resolve(last);
      else reject(new Error(`the flood client exited ${String(code)}: ${stderr.trim()}`));
    });
  });
  return {
    done,
    answered: () => answered,
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    },
  };
}
