// The ceiling for a Node UDP receiver: counts datagrams and does nothing
// else. It asks for the same receive buffer as rated's UDP receiver. SIGUSR2
// prints the count so far as a JSON line.
// Usage: node bare-udp.mjs PORT
import { createSocket } from 'node:dgram';

const port = Number(process.argv[2]);
const RECV_BUFFER = 8 * 1024 * 1024;
let datagrams = 0;
const socket = createSocket('udp4');
socket.on('message', () => {
  datagrams++;
});
socket.bind(port, '127.0.0.1', () => {
  try {
    socket.setRecvBufferSize(RECV_BUFFER);
  } catch {
    // capped by net.core.rmem_max, as for rated
  }
  process.stdout.write(`listening on 127.0.0.1:${port} (receive buffer ${socket.getRecvBufferSize()})\n`);
});
process.on('SIGUSR2', () => {
  process.stdout.write(`${JSON.stringify({ datagrams })}\n`);
});
process.on('SIGTERM', () => {
  socket.close(() => process.exit(0));
});
