// The documentation's examples, run. Each ```console block marked with
// `<!-- example: NAME -->` in docs/*.md is replayed against the built daemon
// on real nftables in a namespace, after the set-up named NAME below: every
// `# rated …` line is run, and what it printed must match what the block
// shows once times, spans, process ids and traffic counters are masked. So
// the docs cannot drift from the program. `RATED_UPDATE_DOCS=1` writes the
// output of this run into the blocks instead.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanUp } from '../helpers/cleanup.js';
import { createNamespace, type Namespace } from '../helpers/netns.js';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { ratedCli, ROOT, startRated, type Rated } from '../helpers/rated.js';

const TOOLS = ['ip', 'nft', 'curl', 'iptables-nft-restore'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;
const DOCS = join(ROOT, 'docs');
const UPDATE = process.env.RATED_UPDATE_DOCS === '1';
/** The configuration path the examples show. */
const SHOWN_CONFIG = '/etc/rated/rated.yml';

interface Example { file: string; name: string; start: number; end: number; lines: string[] }

/** The marked console blocks of every docs page. */
function examples(): Example[] {
  const out: Example[] = [];
  for (const name of readdirSync(DOCS).filter((f) => f.endsWith('.md')).sort()) {
    const file = join(DOCS, name);
    const lines = readFileSync(file, 'utf8').split('\n');
    for (let i = 0; i < lines.length; i++) {
      const m = /^<!-- example: ([\w-]+) -->$/.exec(lines[i] ?? '');
      if (!m || lines[i + 1] !== '```console') continue;
      const end = lines.indexOf('```', i + 2);
      out.push({ file, name: m[1] ?? '', start: i + 2, end, lines: lines.slice(i + 2, end) });
    }
  }
  return out;
}

/** Masks what changes from run to run, and column padding. */
export function mask(text: string): string {
  return text.split('\n').map((line) => {
    let l = line
      .replace(/\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?Z/g, '<time>')
      .replace(/\((\d+[dhms])+(\d+[hms])*( left)?\)/g, '(<span>$3)')
      .replace(/\d+ pkts [\d.]+ [KMG]?i?B/g, '<dropped>')
      .replace(/dropped \d+ packets, \d+ bytes/g, 'dropped <n> packets, <n> bytes')
      .replace(/"(packets|bytes)": \d+/g, '"$1": <n>')
      .replace(/\(pid \d+, \S+ uptime\)/, '(pid <n>, <span> uptime)')
      .replace(/counter packets \d+ bytes \d+/g, 'counter packets <n> bytes <n>')
      .replace(/expires (\d+[dhms])+(\d+ms)?/g, 'expires <span>');
    if (/^(receiver |dropped: |firewall: )/.test(l)) l = l.replace(/\d+/g, '<n>');
    return l.replace(/ {2,}/g, ' ').trimEnd();
  }).join('\n');
}

describe('the documentation\'s examples, run', { skip: SKIP }, () => {
  let ns: Namespace | undefined;
  let dir = '';
  let config = '';
  let socket = '';
  let rated: Rated | undefined;

  before(async () => {
    ns = await createNamespace('rtd-docs');
    dir = mkdtempSync(join(tmpdir(), 'rated-docs-'));
    mkdirSync(join(dir, 'state'), { mode: 0o750 });
    socket = join(dir, 'rated.sock');
    config = join(dir, 'rated.yml');
    // The embedded defaults (rule default: 360 in 2m, 6h), but for where files go.
    writeFileSync(config, ['receivers: { udp: null }', `control: { socket: ${socket} }`, `state: { dir: ${join(dir, 'state')} }`, ''].join('\n'));
  });

  after(() => cleanUp([() => rated?.stop(), () => ns?.delete(), () => rmSync(dir, { recursive: true, force: true })]));

  /** `n` notifications for `ip`, over one keep-alive connection. */
  async function notify(ip: string, n: number): Promise<void> {
    const urls = Array.from({ length: n }, () => 'http://127.0.0.1:8080/');
    const r = await ns!.exec('curl', ['-s', '-o', '/dev/null', '-H', `X-IP: ${ip}`, ...urls]);
    assert.equal(r.exitCode, 0, r.stderr);
  }

  /** Files an example names (shown path → a file of this run), and rules made the 2014 way. */
  const files = new Map<string, string>();
  function file(shown: string, content: string): void {
    const real = join(dir, shown.replaceAll('/', '_'));
    writeFileSync(real, content);
    files.set(shown, real);
  }
  async function oldRule(ip: string): Promise<void> {
    const r = await ns!.exec('iptables-nft-restore', ['--noflush'], `*filter\n-A INPUT -s ${ip}/32 -j DROP\n-A OUTPUT -d ${ip}/32 -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n`);
    assert.equal(r.exitCode, 0, r.stderr);
  }

  /** Set-ups by example name: a fresh daemon, then what the example's story needs. */
  const setups: Record<string, () => Promise<void>> = {
    'nft-table': async () => {
      await notify('192.0.2.2', 361);
      await notify('2001:db8:ff::1', 361);
      const r = await ratedCli(ns!, ['block', '198.51.100.0/24', '--for', '1h', '-c', config, '--socket', socket]);
      assert.equal(r.code, 0, r.stderr);
    },
    'import-list': async () => {
      file('/etc/rated/drop.txt', ['; Spamhaus DROP-style list', '192.0.2.0/24 ; SBL1', '203.0.113.9', '203.0.113.9 # again',
        '10.0.0.0/8 ; an office', '999.1.1.1', '2001:db8:bad::/48', ''].join('\n'));
    },
    migrate: async () => {
      for (const ip of ['203.0.113.7', '203.0.113.8', '127.0.0.2']) await oldRule(ip);
      const r = await ns!.exec('iptables-nft-restore', ['--noflush'], '*filter\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n');
      assert.equal(r.exitCode, 0, r.stderr);
    },
    'cli-main': async () => {
      await notify('203.0.113.7', 361);
      await notify('2001:db8::1', 361);
    },
    'cli-explain': async () => {
      await notify('203.0.113.7', 361);
      await notify('2001:db8:1:2::99', 12);
    },
  };

  test('every marked console block prints what it shows', async () => {
    const found = examples();
    assert.ok(found.length >= 2, `${found.length} marked examples`);
    const updates = new Map<string, string[]>();
    for (const ex of found) {
      const setup = setups[ex.name];
      assert.ok(setup, `${ex.file}: no set-up for example ${ex.name}`);
      await rated?.stop();
      rmSync(join(dir, 'state'), { recursive: true, force: true });
      mkdirSync(join(dir, 'state'), { mode: 0o750 });
      await ns!.exec('nft', ['delete', 'table', 'inet', 'rated']);
      await ns!.exec('iptables-nft', ['-F']);
      files.clear();
      rated = await startRated({ namespace: ns!, config, socket });
      await setup();
      const got: string[] = [];
      const shown = (text: string): string => [...files].reduce((t, [path, real]) => t.replaceAll(real, path), text.replaceAll(config, SHOWN_CONFIG));
      for (const line of ex.lines) {
        const command = /^# (rated|nft) (.*)$/.exec(line);
        if (!command) continue;
        const args = [...files].reduce((t, [path, real]) => t.replaceAll(path, real), command[2] ?? '').split(' ');
        const r = command[1] === 'rated'
          ? await ratedCli(ns!, [...args, '-c', config, '--socket', socket])
          : await ns!.exec('nft', args).then((x) => ({ code: x.exitCode, stdout: x.stdout, stderr: x.stderr }));
        assert.equal(r.code, 0, `${line}: ${r.stderr}`);
        got.push(line, ...shown(r.stdout).replace(/\n$/, '').split('\n'));
      }
      if (UPDATE) {
        updates.set(`${ex.file}\t${ex.start}`, got);
        continue;
      }
      assert.equal(mask(got.join('\n')), mask(ex.lines.join('\n')), `${ex.file}, example ${ex.name}: run with RATED_UPDATE_DOCS=1 to write what the program prints now`);
    }
    if (!UPDATE) return;
    // Rewrite from the last block of a file up, so earlier line numbers stay right.
    const byFile = new Map<string, Example[]>();
    for (const ex of found) byFile.set(ex.file, [...(byFile.get(ex.file) ?? []), ex]);
    for (const [file, list] of byFile) {
      const lines = readFileSync(file, 'utf8').split('\n');
      for (const ex of [...list].reverse()) lines.splice(ex.start, ex.end - ex.start, ...(updates.get(`${file}\t${ex.start}`) ?? ex.lines));
      writeFileSync(file, lines.join('\n'));
    }
  });
});
