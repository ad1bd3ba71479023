// A helper run inside a benchmark namespace, driven by lines on stdin and
// answering one line per command on stdout. Times are wall-clock ms with
// fractions (performance.timeOrigin + performance.now()), comparable across
// processes on one host.
//
//   notify PORT IP N     N notifications for IP to rated's HTTP receiver at
//                        127.0.0.1:PORT, one after the other; answers
//                        "notified IP T", T when the last one was sent.
//   drop SRC HOST PORT   connects from SRC to HOST:PORT, a new attempt every
//   pass SRC HOST PORT   2 ms (an attempt not answered within 40 ms counts as
//                        dropped), until an attempt sees the state asked
//                        for; answers "SRC STATE T", T when that attempt
//                        began, or "SRC timeout T" after 20 s.
//
// Every loop is bounded in count and time; the process ends with its stdin.
import { connect } from 'node:net';
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { clearInterval, clearTimeout, setInterval, setTimeout } from 'node:timers';

const now = () => performance.timeOrigin + performance.now();
const ATTEMPT_MS = 40;
const EVERY_MS = 2;
const GIVE_UP_MS = 20_000;
const agent = new Agent({ keepAlive: true, maxSockets: 1 });

function notifyOnce(port, ip) {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', method: 'GET', agent, headers: { 'X-IP': ip } }, (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.setTimeout(5000, () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', reject);
    req.end();
  });
}

async function notify(port, ip, n) {
  let last = 0;
  for (let i = 0; i < n; i++) {
    last = now();
    await notifyOnce(port, ip);
  }
  return `notified ${ip} ${last}`;
}

/** One connection attempt: resolves true when it connected, false when nothing answered in time. */
function attempt(src, host, port) {
  return new Promise((resolve) => {
    const s = connect({ host, port, localAddress: src });
    const done = (ok) => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), ATTEMPT_MS);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

function watch(want, src, host, port) {
  return new Promise((resolve) => {
    const began = now();
    let settled = false;
    const finish = (line) => {
      if (settled) return;
      settled = true;
      clearInterval(ticker);
      resolve(line);
    };
    const ticker = setInterval(() => {
      if (now() - began > GIVE_UP_MS) {
        finish(`${src} timeout ${now()}`);
        return;
      }
      const at = now();
      void attempt(src, host, port).then((ok) => {
        if ((want === 'pass') === ok) finish(`${src} ${want} ${at}`);
      });
    }, EVERY_MS);
  });
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const [cmd, ...args] = line.trim().split(/\s+/);
  try {
    if (cmd === 'notify') process.stdout.write(`${await notify(Number(args[0]), args[1], Number(args[2]))}\n`);
    else if (cmd === 'drop' || cmd === 'pass') process.stdout.write(`${await watch(cmd, args[0], args[1], Number(args[2]))}\n`);
    else process.stdout.write(`error unknown command ${cmd}\n`);
  } catch (err) {
    process.stdout.write(`error ${String(err?.message ?? err).replace(/\n/g, ' ')}\n`);
  }
}
agent.destroy();
