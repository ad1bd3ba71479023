// The predecessor's way of blocking: one firewall process per address, one
// after the other. Runs inside the benchmark's namespace.
// Usage: node one-per-address.mjs nft|iptables COUNT FIRST
//   nft:      nft add element inet rated v4 { ADDR timeout 600s }
//   iptables: iptables -I INPUT -s ADDR -j DROP
// FIRST is the index of the first address (10.0.0.0 + FIRST). Prints
// {"count":N,"seconds":S,"failed":F}.
import { spawnSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';

const [tool, countText, firstText] = process.argv.slice(2);
const count = Number(countText);
const first = Number(firstText ?? 0);
const address = (k) => `10.${Math.floor(k / 65536) % 256}.${Math.floor(k / 256) % 256}.${k % 256}`;
let failed = 0;
let error = '';
const started = performance.now();
for (let k = first; k < first + count; k++) {
  const ip = address(k);
  const argv = tool === 'nft'
    ? ['nft', ['add', 'element', 'inet', 'rated', 'v4', `{ ${ip} timeout 600s }`]]
    : ['iptables', ['-w', '-I', 'INPUT', '-s', ip, '-j', 'DROP']];
  const r = spawnSync(argv[0], argv[1], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) {
    failed++;
    error = String(r.stderr).trim() || String(r.error);
  }
}
const seconds = (performance.now() - started) / 1000;
process.stdout.write(`${JSON.stringify({ count, seconds, failed, error })}\n`);
