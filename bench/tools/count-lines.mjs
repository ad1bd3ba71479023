// The floor for reading an access log in Node: count its lines with
// readline and do nothing else. Prints {"lines":N,"seconds":S}.
// Usage: node count-lines.mjs FILE
import { createReadStream } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';

const started = performance.now();
let lines = 0;
const rl = createInterface({ input: createReadStream(process.argv[2]), crlfDelay: Infinity });
for await (const line of rl) {
  if (line.length >= 0) lines++;
}
process.stdout.write(`${JSON.stringify({ lines, seconds: (performance.now() - started) / 1000 })}\n`);
