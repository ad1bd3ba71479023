// The ceiling for a Node HTTP receiver: a bare node:http server that answers
// every request with 204 and does nothing else.
// Usage: node bare-http.mjs PORT
import { createServer } from 'node:http';

const port = Number(process.argv[2]);
const server = createServer((req, res) => {
  res.statusCode = 204;
  res.end();
});
server.keepAliveTimeout = 75_000;
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening on 127.0.0.1:${port}\n`);
});
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
