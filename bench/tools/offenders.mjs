// Single offenders, one after the other, and when each lands in the kernel.
// Runs inside the daemon's namespace. It follows `nft -j monitor new
// elements` (the kernel's own notification when a transaction adds an
// element to TABLE), then every INTERVAL ms makes one new address cross a
// `limit: 1` rule: two notifications to rated's HTTP receiver at
// 127.0.0.1:PORT with X-URI PATH, the second one the crossing one. For each
// it records when the crossing notification was sent, when its answer came
// back, and when the monitor reported the element. One offender first, not
// counted, proves the monitor is listening. Times are wall-clock ms with
// fractions (performance.timeOrigin + performance.now()).
// Addresses: 198.19.0.0 and up (RFC 2544), number FIRST to FIRST + COUNT.
// Prints {"samples":[{ip,sent,answered,kernel}…],"warmup":{…}} at the end.
// Usage: node offenders.mjs PORT TABLE PATH FIRST COUNT INTERVAL_MS
import { spawn } from 'node:child_process';
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { clearTimeout, setTimeout } from 'node:timers';
import { setTimeout as delay } from 'node:timers/promises';

const [portText, table, path, firstText, countText, intervalText] = process.argv.slice(2);
const port = Number(portText);
const first = Number(firstText);
const count = Number(countText);
const interval = Number(intervalText);
if (!table || !path || ![port, count, interval].every((n) => Number.isInteger(n) && n > 0)
  || !Number.isInteger(first) || first < 0 || first + count + 1 > 65536) {
  process.stderr.write('usage: node offenders.mjs PORT TABLE PATH FIRST COUNT INTERVAL_MS\n');
  process.exit(2);
}
/** How long an offender may take to reach the kernel before it counts as missing. */
const WAIT_MS = 10_000;

const now = () => performance.timeOrigin + performance.now();
const address = (k) => `198.19.${k >>> 8}.${k & 255}`;

/** Address → when the monitor reported it. */
const seen = new Map();
const waiters = new Map();

function elementAddresses(elem) {
  const out = [];
  const items = Array.isArray(elem) ? elem : elem && Array.isArray(elem.set) ? elem.set : [elem];
  for (const item of items) {
    let val = item && typeof item === 'object' && 'elem' in item ? item.elem.val : item;
    if (val && typeof val === 'object' && 'prefix' in val) val = val.prefix.addr;
    if (typeof val === 'string') out.push(val);
  }
  return out;
}

const monitor = spawn('nft', ['-j', 'monitor', 'new', 'elements'], { stdio: ['ignore', 'pipe', 'pipe'] });
let monitorErr = '';
monitor.stderr.setEncoding('utf8').on('data', (s) => { monitorErr += s; });
createInterface({ input: monitor.stdout }).on('line', (line) => {
  const at = now();
  let doc;
  try {
    doc = JSON.parse(line);
  } catch {
    return;
  }
  const el = doc?.add?.element;
  if (!el || el.table !== table) return;
  for (const ip of elementAddresses(el.elem)) {
    if (seen.has(ip)) continue;
    seen.set(ip, at);
    waiters.get(ip)?.();
  }
});

const agent = new Agent({ keepAlive: true, maxSockets: 4 });

function notify(ip) {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', agent, headers: { 'X-IP': ip, 'X-URI': path } }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 204 ? resolve(now()) : reject(new Error(`${ip}: answered ${res.statusCode}`))));
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`${ip}: no answer within 10 s`)));
    req.on('error', reject);
    req.end();
  });
}

/** Both notifications of one offender; resolves when the element is in the kernel or after WAIT_MS. */
async function offend(k) {
  const ip = address(k);
  await notify(ip);
  const inKernel = new Promise((resolve) => {
    if (seen.has(ip)) return resolve();
    const timer = setTimeout(resolve, WAIT_MS);
    waiters.set(ip, () => {
      clearTimeout(timer);
      resolve();
    });
  });
  const sent = now();
  const answered = await notify(ip);
  await inKernel;
  waiters.delete(ip);
  return { ip, sent, answered, kernel: seen.get(ip) ?? null };
}

async function main() {
  // The monitor prints nothing until an event: wait a moment for it to subscribe, then prove it with one offender.
  await delay(300);
  const warmup = await offend(first);
  if (warmup.kernel === null) throw new Error(`the first offender ${warmup.ip} was not reported in table ${table} within ${WAIT_MS} ms${monitorErr ? `: ${monitorErr.trim()}` : ''}`);
  const pending = [];
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const due = t0 + i * interval - performance.now();
    if (due > 0) await delay(due);
    pending.push(offend(first + 1 + i));
  }
  const samples = await Promise.all(pending);
  process.stdout.write(`${JSON.stringify({ warmup, samples })}\n`);
}

main().then(() => {
  monitor.kill();
  agent.destroy();
}, (err) => {
  monitor.kill();
  agent.destroy();
  process.stderr.write(`${err.message}\n`);
  process.exitCode = 1;
});
