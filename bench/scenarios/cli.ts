// The CLI as scripts call it: each command is a whole process, timed from
// spawn to exit, against `node -e 0` (a Node that loads nothing) in the same
// run — `--version`, `--help`, and `status`, `list`, `block` answered by a
// running daemon (a dry run in a namespace, reached through its control
// socket, a file), with `--socket` and with the socket read from the
// configuration file.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createNamespace } from '../../test/helpers/netns.js';
import type { Scenario } from '../lib/context.js';
import { median, spread } from '../lib/interleave.js';
import { BIN, startBenchRated } from '../lib/rated.js';

const NAME = 'cli';

export const cli: Scenario = {
  name: NAME,
  title: 'The CLI: whole-process time of each command against `node -e 0`',
  tools: ['ip'],
  root: true,
  async run(ctx) {
    const ns = await createNamespace('rb-cli');
    try {
      const rated = await startBenchRated({ namespace: ns, scratch: ctx.scratch, cpus: ctx.cpus.server, http: 9101, rules: [{ name: 'bench', limit: 360, window: '120s', block: '6h' }], args: ['--dry-run'] });
      try {
        const socket = ['--socket', rated.socket];
        const config = ['-c', join(rated.socket, '..', 'rated.yml')];
        const commands: Record<string, string[]> = {
          'node -e 0': ['-e', '0'],
          'rated --version': [BIN, '--version'],
          'rated --help': [BIN, '--help'],
          'rated status --socket': [BIN, 'status', ...socket],
          'rated list --socket': [BIN, 'list', ...socket],
          'rated block --socket': [BIN, 'block', '198.51.100.7', '--for', '1m', ...socket],
          'rated list -c (socket from the configuration)': [BIN, 'list', ...config],
        };
        const n = ctx.quick ? 5 : 15;
        const times = new Map<string, number[]>();
        // Interleaved, so that a busy moment of the machine falls on all of them alike.
        for (let round = 0; round < n; round++) {
          for (const [name, args] of Object.entries(commands)) {
            const t0 = performance.now();
            const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
            const ms = performance.now() - t0;
            if (r.status !== 0) throw new Error(`${name} exited ${String(r.status)}: ${r.stderr.toString().trim()}`);
            times.set(name, [...(times.get(name) ?? []), ms]);
          }
        }
        const base = median(times.get('node -e 0') ?? []);
        for (const [name, runs] of times) {
          if (name === 'node -e 0') continue;
          // The targets of an idle machine where `node -e 0` takes 40 ms (0.12 s and 0.15 s), as margins over it.
          const bound = base + (name === 'rated --version' || name === 'rated --help' ? 80 : 110);
          ctx.results.add(NAME, {
            name: `${name}, whole process`,
            value: median(runs) / 1000,
            unit: 's',
            baseline: { name: 'node -e 0', value: base / 1000, unit: 's' },
            ratio: 'lower',
            target: { of: 'value', op: '<=', bound: bound / 1000 },
            note: `median of ${n}; ${spread(runs.map((ms) => ms / 1000), (s) => `${s.toFixed(3)} s`)}`,
          });
        }
      } finally {
        await rated.stop();
      }
    } finally {
      await ns.delete();
    }
  },
};
