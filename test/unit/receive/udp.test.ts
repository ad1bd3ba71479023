// The UDP receiver on 127.0.0.1 with a free port: no root needed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { pino } from 'pino';
import { UdpReceiver } from '../../../src/receive/udp.js';
import { Metrics } from '../../../src/metrics.js';
import type { Hit } from '../../../src/receive/hit.js';
import { waitFor } from '../../helpers/wait-for.js';

const quiet = pino({ level: 'silent' });

function receiver(opts: { pattern?: string | null; recvBufferSize?: number } = {}) {
  const metrics = new Metrics({ activeBlocks: () => 0, trackedClients: () => 0 });
  const hits: Hit[] = [];
  const udp = new UdpReceiver({
    address: '127.0.0.1', port: 0, pattern: opts.pattern ?? null, metrics, log: quiet,
    ...(opts.recvBufferSize ? { recvBufferSize: opts.recvBufferSize } : {}),
    sink: (hit) => {
      hits.push(hit);
      return 'counted';
    },
  });
  return { udp, metrics, hits };
}

function port(endpoint: string): number {
  return Number(endpoint.slice(endpoint.lastIndexOf(':') + 1));
}

describe('UdpReceiver', () => {
  let client: Socket;
  before(() => {
    client = createSocket('udp4');
  });
  after(() => {
    client.close();
  });

  const send = (p: number, data: string | Buffer): Promise<void> => new Promise((resolve, reject) => {
    client.send(typeof data === 'string' ? Buffer.from(data, 'latin1') : data, p, '127.0.0.1', (err) => (err ? reject(err) : resolve()));
  });

  test('reads nginx syslog datagrams, several lines in one, and counts garbage per reason', async () => {
    const r = receiver();
    await r.udp.listen();
    try {
      const p = port(r.udp.endpoint);
      assert.ok(r.udp.receiveBuffer > 0);
      await send(p, '<190>Nov 22 07:40:00 web nginx: 192.0.2.1 GET 200 example.org /a');
      await send(p, '192.0.2.2 POST 401 example.org /login\n192.0.2.3 GET 404 h /x\n');
      await send(p, '');                                                  // empty
      await send(p, Buffer.alloc(65_507, 0x41));                          // huge garbage
      await send(p, Buffer.from([0, 1, 2, 3, 0xff, 0xfe, 10, 0x80]));      // binary, then a line of one high byte
      await send(p, '<999>Nov 22 07:40:00 web nginx: 192.0.2.9 GET 200 h /'); // forged header
      await send(p, '<165>1 2026-11-22T07:40:00Z web nginx - - - 192.0.2.9'); // RFC 5424
      await send(p, 'unix: GET 200 h /');
      await send(p, '192.0.2.4 GET 200 h /last');
      await waitFor(() => r.hits.some((h) => h.uri === '/last'), { what: 'the last datagram' });
      assert.deepEqual(r.hits.map((h) => [h.ip.text, h.method, h.status, h.host, h.uri]), [
        ['192.0.2.1', 'GET', 200, 'example.org', '/a'],
        ['192.0.2.2', 'POST', 401, 'example.org', '/login'],
        ['192.0.2.3', 'GET', 404, 'h', '/x'],
        ['192.0.2.4', 'GET', 200, 'h', '/last'],
      ]);
      const m = r.metrics;
      assert.equal(m.received.get('udp'), 4);
      assert.equal(m.rejected.get('udp\tempty'), 1);
      assert.equal(m.rejected.get('udp\tbad-address'), 2, 'the huge datagram and the high byte');
      assert.equal(m.rejected.get('udp\tbinary'), 1);
      assert.equal(m.rejected.get('udp\tbad-header'), 2);
      assert.equal(m.ignored.get('udp\tunix-socket'), 1);
      assert.equal(r.udp.sampleDrops(), 0);
      assert.match(await m.render(), /rated_udp_drops_total 0/);
    } finally {
      await r.udp.close();
    }
  });

  test('a pattern replaces the default formats', async () => {
    const r = receiver({ pattern: '^rl1 (?<ip>\\S+)$' });
    await r.udp.listen();
    try {
      const p = port(r.udp.endpoint);
      await send(p, '<190>Nov 22 07:40:00 web ratelimit: rl1 192.0.2.1');
      await send(p, '<190>Nov 22 07:40:00 web ratelimit: 192.0.2.2 GET 200 h /');
      await send(p, 'rl1 192.0.2.3');
      await waitFor(() => r.hits.length >= 2 && r.metrics.rejected.get('udp\tno-match') === 1);
      assert.deepEqual(r.hits.map((h) => h.ip.text), ['192.0.2.1', '192.0.2.3']);
    } finally {
      await r.udp.close();
    }
  });

  test('datagrams the kernel drops are counted from /proc/net/udp: received + drops = sent', async () => {
    // The smallest buffer the kernel allows, and an event loop kept busy
    // (spawnSync) while another process sends: most datagrams overflow it.
    const r = receiver({ recvBufferSize: 1024 });
    await r.udp.listen();
    try {
      const p = port(r.udp.endpoint);
      const sent = 3000;
      const child = spawnSync(process.execPath, ['-e', `
        const s = require('node:dgram').createSocket('udp4');
        let i = 0;
        const next = () => {
          if (i === ${sent}) return s.close();
          s.send(Buffer.from('192.0.2.' + (1 + (i % 200)) + ' GET 200 h /' + i++), ${p}, '127.0.0.1', next);
        };
        next();
      `], { timeout: 20_000 });
      assert.equal(child.status, 0, String(child.stderr));
      const total = await waitFor(() => {
        const drops = r.udp.sampleDrops() ?? 0;
        const received = r.metrics.received.get('udp');
        return received + drops === sent ? { received, drops } : null;
      }, { what: 'received + drops to add up to what was sent', timeoutMs: 5000 });
      assert.ok(total.drops > 0, `some datagrams were dropped: ${JSON.stringify(total)}`);
      assert.equal(r.metrics.udpDrops, total.drops);
      assert.match(await r.metrics.render(), new RegExp(`rated_udp_drops_total ${total.drops}`));
    } finally {
      await r.udp.close();
    }
  });

  test('a busy port is a BIND_FAILED error naming the key', async () => {
    const a = receiver();
    await a.udp.listen();
    try {
      const b = new UdpReceiver({
        address: '127.0.0.1', port: port(a.udp.endpoint), pattern: null, metrics: a.metrics, log: quiet, sink: () => 'counted',
      });
      await assert.rejects(b.listen(), (err: Error & { code?: string }) => err.code === 'BIND_FAILED' && /receivers\.udp/.test(err.message));
      await b.close();
    } finally {
      await a.udp.close();
    }
  });
});
