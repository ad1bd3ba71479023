// Sends nginx-style syslog datagrams (RFC 3164 header, `rated` log format)
// to 127.0.0.1:PORT for SECONDS, rotating the client address over ADDRESSES
// addresses from 198.18.0.0. RATE is datagrams per second, 0 for as fast as
// the socket takes them. Prints {"sent":N,"seconds":S} at the end.
// Usage: node udp-flood.mjs PORT SECONDS RATE ADDRESSES
import { createSocket } from 'node:dgram';
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import { setImmediate, setTimeout } from 'node:timers';

const [port, seconds, rate, addresses] = process.argv.slice(2).map(Number);
const socket = createSocket('udp4');
const datagrams = [];
for (let k = 0; k < addresses; k++) {
  const ip = `198.${18 + Math.floor(k / 65536)}.${Math.floor(k / 256) % 256}.${k % 256}`;
  datagrams.push(Buffer.from(`<190>Nov 22 07:40:00 bench nginx: ${ip} GET 200 bench.example /index.html`));
}

let sent = 0;
let failed = 0;
let inFlight = 0;
let next = 0;
const MAX_IN_FLIGHT = 256;
let started = 0;
let deadline = 0;

function onSent(err) {
  inFlight--;
  if (err) failed++;
  else sent++;
}

// The socket is connected first, so send() skips the address lookup.
function sendOne() {
  const buf = datagrams[next];
  next = next + 1 === datagrams.length ? 0 : next + 1;
  inFlight++;
  socket.send(buf, onSent);
}

function pump() {
  const now = performance.now();
  if (now >= deadline) return finish();
  const due = rate > 0 ? Math.floor(((now - started) / 1000) * rate) : Infinity;
  let n = 0;
  while (sent + failed + inFlight < due && inFlight < MAX_IN_FLIGHT && n < 4096) {
    sendOne();
    n++;
  }
  if (rate > 0) setTimeout(pump, 1);
  else setImmediate(pump);
}

function finish() {
  const wait = () => {
    if (inFlight > 0) return setImmediate(wait);
    const elapsed = (performance.now() - started) / 1000;
    process.stdout.write(`${JSON.stringify({ sent, failed, seconds: elapsed })}\n`);
    socket.close();
  };
  wait();
}

socket.connect(port, '127.0.0.1', () => {
  started = performance.now();
  deadline = started + seconds * 1000;
  pump();
});
