// Sends nginx-style syslog lines (RFC 3164 header, `rated` log format) to
// 127.0.0.1:PORT, LINES newline-separated lines per datagram, one line for
// each of COUNT distinct client addresses starting at number FIRST, at RATE
// lines per second, for at most SECONDS. Addresses: FAMILY 4 counts up from
// 10.0.0.0; FAMILY 6 counts up inside the one network 2001:db8:1:2::/64.
// Prints {"lines":N,"datagrams":N,"failed":N,"seconds":S} at the end.
// Usage: node udp-lines.mjs PORT FAMILY FIRST COUNT LINES RATE SECONDS
import { Buffer } from 'node:buffer';
import { createSocket } from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { setTimeout } from 'node:timers';

const [port, family, first, count, perDatagram, rate, seconds] = process.argv.slice(2).map(Number);
const positive = (n) => Number.isInteger(n) && n > 0;
if (![port, count, perDatagram, rate, seconds].every(positive) || !Number.isInteger(first) || first < 0
  || (family !== 4 && family !== 6) || first + count > 2 ** 24) {
  process.stderr.write('usage: node udp-lines.mjs PORT FAMILY(4|6) FIRST COUNT LINES RATE SECONDS\n');
  process.exit(2);
}

function address(k) {
  if (family === 4) return `10.${(k >>> 16) & 255}.${(k >>> 8) & 255}.${k & 255}`;
  return `2001:db8:1:2:1:0:${(k >>> 16).toString(16)}:${(k & 0xffff).toString(16)}`;
}

function datagram(from, to) {
  const lines = [];
  for (let k = from; k < to; k++) lines.push(`<190>Nov 22 07:40:00 bench nginx: ${address(k)} GET 200 bench.example /index.html`);
  return Buffer.from(lines.join('\n'));
}

const socket = createSocket('udp4');
const end = first + count;
let next = first;
let lines = 0;
let datagrams = 0;
let failed = 0;
let inFlight = 0;
let started = 0;
let deadline = 0;
const MAX_IN_FLIGHT = 64;

function pump() {
  const now = performance.now();
  if (next >= end || now >= deadline) return finish();
  const due = Math.floor(((now - started) / 1000) * rate);
  let n = 0;
  while (next < end && next - first < due && inFlight < MAX_IN_FLIGHT && n < 256) {
    const to = Math.min(end, next + perDatagram);
    const size = to - next;
    inFlight++;
    socket.send(datagram(next, to), (err) => {
      inFlight--;
      if (err) failed++;
      else {
        datagrams++;
        lines += size;
      }
    });
    next = to;
    n++;
  }
  setTimeout(pump, 1);
}

function finish() {
  if (inFlight > 0) return setTimeout(finish, 1);
  const elapsed = (performance.now() - started) / 1000;
  process.stdout.write(`${JSON.stringify({ lines, datagrams, failed, seconds: elapsed })}\n`);
  socket.close();
}

// Connected first, so send() skips the address lookup.
socket.connect(port, '127.0.0.1', () => {
  started = performance.now();
  deadline = started + seconds * 1000;
  pump();
});
