import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Namespace } from '../../test/helpers/netns.js';
import { NGINX } from '../../test/helpers/nginx.js';
import { waitFor } from '../../test/helpers/wait-for.js';
import { spawnProc, type Proc } from './proc.js';

/** How nginx tells a receiver about each request. */
export type Report =
  | { readonly kind: 'none' }
  /** The post_action snippet of SPEC §4, to an HTTP receiver on 127.0.0.1:port. */
  | { readonly kind: 'post_action'; readonly port: number }
  /** `access_log syslog:` in the `rated` log format, to a UDP receiver on 127.0.0.1:port. */
  | { readonly kind: 'syslog'; readonly port: number }
  /** A buffered access log file in the combined format. */
  | { readonly kind: 'file'; readonly path: string };

export interface BenchNginxOptions {
  readonly namespace: Namespace;
  readonly scratch: string;
  /** `listen` arguments, e.g. `127.0.0.1:8000` or `80`. */
  readonly listen: string;
  readonly report: Report;
  /** Trust X-Forwarded-For from 127.0.0.1 (the realip module), so a local load generator can pose as many clients. */
  readonly realip: boolean;
  readonly cpus: string | null;
}

/** A static page of about 600 bytes, like nginx's default index.html. */
const PAGE = `<!DOCTYPE html>\n<html>\n<head><title>bench</title></head>\n<body>\n${'<p>A small static page served by nginx for the benchmark.</p>\n'.repeat(8)}</body>\n</html>\n`;

/** Renders one worker's nginx.conf for a benchmark: no access log unless the report is one. */
export function renderBenchConf(prefix: string, o: Pick<BenchNginxOptions, 'listen' | 'report' | 'realip'>): string {
  const p = (name: string): string => join(prefix, name);
  const r = o.report;
  const accessLog = r.kind === 'syslog'
    ? `access_log syslog:server=127.0.0.1:${r.port},tag=nginx rated;`
    : r.kind === 'file' ? `access_log ${r.path} combined buffer=64k flush=1s;` : 'access_log off;';
  const upstream = r.kind === 'post_action' ? `upstream rated { server 127.0.0.1:${r.port}; keepalive 16; }` : '';
  const location = r.kind === 'post_action'
    ? `location / { post_action @rated; index index.html; }
        location @rated {
            internal;
            proxy_pass http://rated;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_pass_request_headers off;
            proxy_set_header X-IP $remote_addr;
            proxy_set_header X-Method $request_method;
            proxy_set_header X-Status $status;
            proxy_set_header X-Host $host;
            proxy_set_header X-URI $request_uri;
        }`
    : 'location / { index index.html; }';
  return `# rendered by bench/lib/nginx.ts
daemon off;
master_process on;
worker_processes 1;
user nobody nogroup;
pid ${p('nginx.pid')};
error_log ${p('logs/error.log')} warn;

events {
    worker_connections 1024;
}

http {
    log_format rated '$remote_addr $request_method $status $host $request_uri';
    ${accessLog}
    client_body_temp_path ${p('tmp/client_body')};
    proxy_temp_path ${p('tmp/proxy')};
    fastcgi_temp_path ${p('tmp/fastcgi')};
    uwsgi_temp_path ${p('tmp/uwsgi')};
    scgi_temp_path ${p('tmp/scgi')};
    default_type text/html;
    keepalive_timeout 30s;
    keepalive_requests 1000000;
    ${o.realip ? 'set_real_ip_from 127.0.0.1; real_ip_header X-Forwarded-For;' : ''}
    ${upstream}

    server {
        listen ${o.listen};
        server_name _;
        root ${p('html')};
        ${location}
    }
}
`;
}

/** A running nginx. */
export interface BenchNginx {
  readonly proc: Proc;
  readonly prefix: string;
  errorLog(): string;
  /** SIGQUIT, then SIGKILL for the master and its workers; removes the prefix. */
  stop(): Promise<void>;
}

/** Starts nginx in a namespace and waits until `probeUrl` answers 200. */
export async function startBenchNginx(o: BenchNginxOptions, probeUrl: string): Promise<BenchNginx> {
  const prefix = mkdtempSync(join(o.scratch, 'nginx-'));
  chmodSync(prefix, 0o755);
  for (const dir of ['logs', 'tmp', 'html']) mkdirSync(join(prefix, dir), { mode: 0o755 });
  writeFileSync(join(prefix, 'html', 'index.html'), PAGE, { mode: 0o644 });
  const confPath = join(prefix, 'nginx.conf');
  writeFileSync(confPath, renderBenchConf(prefix, o));
  const proc = spawnProc([NGINX, '-p', prefix, '-e', join(prefix, 'logs', 'error.log'), '-c', confPath], {
    name: 'nginx', namespace: o.namespace, cpus: o.cpus, logFile: join(prefix, 'output.log'),
  });
  const errorLog = (): string => {
    try {
      return readFileSync(join(prefix, 'logs', 'error.log'), 'utf8');
    } catch {
      return '';
    }
  };
  const handle: BenchNginx = {
    proc,
    prefix,
    errorLog,
    stop: async () => {
      await proc.stop({ signal: 'SIGQUIT', graceMs: 3000 });
      rmSync(prefix, { recursive: true, force: true });
    },
  };
  try {
    await waitFor(async () => {
      if (proc.hasExited()) return true;
      const r = await o.namespace.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '1', probeUrl]);
      return r.stdout === '200';
    }, { timeoutMs: 10_000, intervalMs: 50, what: `nginx to answer ${probeUrl}` });
    if (proc.hasExited()) throw new Error('nginx exited');
    return handle;
  } catch (err) {
    const detail = `${(err as Error).message}\n--- nginx ---\n${proc.output()}\n--- error.log (last lines) ---\n${errorLog().split('\n').slice(-12).join('\n')}`;
    await handle.stop();
    throw new Error(detail, { cause: err });
  }
}
