import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Metrics } from '../../src/metrics.js';

test('dropped traffic per family, in the Prometheus text, once the firewall has been read', async () => {
  const m = new Metrics({ activeBlocks: () => 3, trackedClients: () => 7 });
  assert.doesNotMatch(await m.render(), /^rated_dropped_packets_total\{/m, 'nothing before the first read');
  m.dropped = { ipv4: { packets: 12, bytes: 720 }, ipv6: { packets: 3, bytes: 312 } };
  const text = await m.render();
  assert.match(text, /^rated_dropped_packets_total\{family="ipv4"\} 12$/m);
  assert.match(text, /^rated_dropped_packets_total\{family="ipv6"\} 3$/m);
  assert.match(text, /^rated_dropped_bytes_total\{family="ipv4"\} 720$/m);
  assert.match(text, /^rated_dropped_bytes_total\{family="ipv6"\} 312$/m);
});
