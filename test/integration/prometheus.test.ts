// Prometheus, for real: the shipped alert rules pass `promtool check rules`
// and their own `promtool test rules`; a real Prometheus, started on
// loopback inside a namespace, scrapes the built daemon's metrics.listen
// and answers queries about it; and every query of the shipped Grafana
// dashboard is one this Prometheus accepts, over metrics rated exports.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { cleanUp } from '../helpers/cleanup.js';
import { createNamespace, type Namespace } from '../helpers/netns.js';
import { missingPrereqs, prereqsMet } from '../helpers/prereq.js';
import { ROOT, startRated, type Rated } from '../helpers/rated.js';
import { waitFor } from '../helpers/wait-for.js';

const TOOLS = ['ip', 'nft', 'curl', 'prometheus', 'promtool'];
const SKIP = prereqsMet(TOOLS) ? false : `needs ${missingPrereqs(TOOLS).join(', ')}`;
const CONTRIB = join(ROOT, 'contrib');
const METRICS = '127.0.0.1:9466';
const PROM = '127.0.0.1:9090';

interface PromAnswer { status: string; error?: string; data?: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> } }

describe('Prometheus: alert rules, a real scrape, the dashboard', { skip: SKIP }, () => {
  let ns: Namespace | undefined;
  let dir = '';
  let rated: Rated | undefined;
  let prometheus: ChildProcess | undefined;
  let promLog = '';

  before(async () => {
    ns = await createNamespace('rtd-prom');
    dir = mkdtempSync(join(tmpdir(), 'rated-prom-'));
    mkdirSync(join(dir, 'state'), { mode: 0o750 });
    const config = join(dir, 'rated.yml');
    writeFileSync(config, [
      'receivers: { http: { address: 127.0.0.1, port: 8080 } }',
      'rules: [{ name: flood, limit: 2, window: 60s, block: 10m }]',
      `metrics: { listen: "${METRICS}" }`,
      `control: { socket: ${join(dir, 'rated.sock')} }`,
      `state: { dir: ${join(dir, 'state')} }`,
      '',
    ].join('\n'));
    rated = await startRated({ namespace: ns, config, socket: join(dir, 'rated.sock') });
    writeFileSync(join(dir, 'prometheus.yml'), [
      'global: { scrape_interval: 1s, evaluation_interval: 1s }',
      `rule_files: [${join(CONTRIB, 'prometheus', 'rated.rules.yml')}]`,
      'scrape_configs:',
      `  - { job_name: rated, static_configs: [{ targets: ["${METRICS}"] }] }`,
      '',
    ].join('\n'));
    prometheus = spawn('ip', ['netns', 'exec', ns.name, 'prometheus', `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=${PROM}`, '--log.level=warn'], { stdio: ['ignore', 'ignore', 'pipe'] });
    prometheus.stderr?.on('data', (d: Buffer) => { promLog = (promLog + d.toString()).slice(-4000); });
  });

  after(() => cleanUp([
    async () => {
      if (prometheus?.pid !== undefined && prometheus.exitCode === null) {
        const exited = new Promise((resolve) => prometheus?.once('exit', resolve));
        prometheus.kill('SIGTERM');
        await exited;
      }
    },
    () => rated?.stop(), () => ns?.delete(), () => rmSync(dir, { recursive: true, force: true }),
  ]));

  async function query(expr: string): Promise<PromAnswer> {
    const r = await ns!.exec('curl', ['-s', '--get', '--data-urlencode', `query=${expr}`, `http://${PROM}/api/v1/query`]);
    assert.equal(r.exitCode, 0, `Prometheus answers: ${r.stderr}\n${promLog}`);
    return JSON.parse(r.stdout) as PromAnswer;
  }

  test('the alert rules pass promtool check rules and their unit tests', async () => {
    const check = await execa('promtool', ['check', 'rules', 'rated.rules.yml'], { cwd: join(CONTRIB, 'prometheus'), reject: false });
    assert.equal(check.exitCode, 0, check.stdout + check.stderr);
    assert.match(check.stdout, /SUCCESS: 7 rules found/);
    const unit = await execa('promtool', ['test', 'rules', 'rated.rules.test.yml'], { cwd: join(CONTRIB, 'prometheus'), reject: false });
    assert.equal(unit.exitCode, 0, unit.stdout + unit.stderr);
    assert.match(unit.stdout, /SUCCESS/);
  });

  test('a real Prometheus scrapes metrics.listen twice and reads what rated did', async () => {
    assert.ok(rated);
    assert.equal((await rated.cli(['block', '192.0.2.7', '--for', '1h'])).code, 0);
    assert.equal((await rated.cli(['block', '192.0.2.8', '--for', '1h'])).code, 0);
    await waitFor(async () => {
      const a = await query('count_over_time(up{job="rated"}[1m])');
      return a.status === 'success' && Number(a.data?.result[0]?.value[1] ?? 0) >= 2;
    }, { timeoutMs: 30_000, intervalMs: 500, what: `two scrapes of rated by Prometheus\n${promLog}` });
    await waitFor(async () => (await query('rated_active_blocks{job="rated"}')).data?.result[0]?.value[1] === '2', {
      timeoutMs: 10_000, intervalMs: 500, what: 'Prometheus to read 2 active blocks',
    });
    const blocks = await query('sum(rated_blocks_total{job="rated", source="manual"})');
    assert.equal(blocks.data?.result[0]?.value[1], '2');
    const max = await query('rated_max_blocks{job="rated"}');
    assert.equal(max.data?.result[0]?.value[1], '1048576');
    // The rules loaded; nothing is wrong, so nothing fires.
    const alerts = await query('ALERTS{alertstate="firing"}');
    assert.deepEqual(alerts.data?.result, []);
  });

  test('every query of the Grafana dashboard is accepted and names only metrics rated exports', async () => {
    const dashboard = JSON.parse(readFileSync(join(CONTRIB, 'grafana', 'rated.json'), 'utf8')) as { panels: Array<{ title: string; targets: Array<{ expr: string }> }> };
    const exported = new Set((await ns!.exec('curl', ['-s', `http://${METRICS}/metrics`])).stdout.split('\n')
      .filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2] ?? ''));
    const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => ({ panel: p.title, expr: t.expr })));
    assert.ok(exprs.length >= 14, `${exprs.length} queries`);
    for (const { panel, expr } of exprs) {
      for (const name of expr.match(/\brated_\w+/g) ?? []) {
        const base = name.replace(/_(bucket|sum|count)$/, '');
        assert.ok(exported.has(name) || exported.has(base), `${panel}: ${name} is not a metric rated exports`);
      }
      const concrete = expr.replaceAll('$instance', '.*').replaceAll('$__rate_interval', '1m');
      const a = await query(concrete);
      assert.equal(a.status, 'success', `${panel}: ${expr}: ${a.error ?? ''}`);
    }
  });
});
