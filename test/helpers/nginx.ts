import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Namespace } from './netns.js';
import { waitFor } from './wait-for.js';

/** The binary Debian installs; nginx-light and nginx-core both put it here. */
export const NGINX = '/usr/sbin/nginx';

/** What `startNginx` needs to know. */
export interface NginxOptions {
  /** Network namespace nginx runs in; rated's receiver listens in the same one. */
  readonly namespace: Namespace;
  /** Port of rated's HTTP receiver on 127.0.0.1 inside the namespace (the `post_action` input). */
  readonly ratedPort: number;
  /** How nginx tells rated of requests: `post_action` to ratedPort (default), syslog over UDP, or an access log file. */
  readonly input?: NginxInput;
  /** Port nginx serves on, on every IPv4 and IPv6 address of the namespace (default 80). */
  readonly port?: number;
  /** Body of the static file served at `/` and `/index.html`. */
  readonly body?: string;
  /** Sent to the HTTP receiver as X-Rated-Token (receivers.http.token), when given. */
  readonly token?: string;
  /** rated's HTTP receiver on a unix socket (receivers.http.socket) instead of ratedPort. */
  readonly ratedSocket?: string;
  /** How long to wait for nginx to answer before giving up (default 10 s). */
  readonly startTimeoutMs?: number;
}

/**
 * The nginx side of each input, as the README shows it: `post_action` to the
 * HTTP receiver; `access_log syslog:` in the `rated` format to the UDP
 * receiver; or an access log file (`combined` unless said otherwise, with
 * `buffer=`/`flush=` when given) that the file receiver follows.
 */
export type NginxInput =
  | { readonly kind: 'http' }
  | { readonly kind: 'udp'; readonly port: number }
  | { readonly kind: 'file'; readonly path: string; readonly format?: 'combined' | 'rated'; readonly buffer?: string; readonly flush?: string };

/** A running nginx; `stop()` must be called in an after hook. */
export interface Nginx {
  /** The prefix directory holding nginx.conf, logs, temp paths and html/. */
  readonly prefix: string;
  readonly pid: number;
  readonly port: number;
  /** The rendered configuration, for failure messages. */
  readonly conf: string;
  /** The current contents of nginx's error log. */
  errorLog(): string;
  /** The current contents of nginx's access log. */
  accessLog(): string;
  /** SIGQUIT (graceful), then SIGKILL for the master and its workers; removes the prefix dir. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Renders nginx.conf for a test: everything under `prefix`, one worker, in the
 * foreground, and the post_action snippet of SPEC §4 verbatim, so the test
 * exercises exactly what the README tells users to write.
 */
export function renderNginxConf(prefix: string, port: number, ratedPort: number, input: NginxInput = { kind: 'http' }, token?: string, ratedSocket?: string): string {
  const p = (name: string): string => join(prefix, name);
  const location = input.kind === 'http'
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
            proxy_set_header X-URI $request_uri;${token === undefined ? '' : `
            proxy_set_header X-Rated-Token ${token};`}
        }`
    : input.kind === 'udp'
      ? `location / { index index.html; }
        access_log syslog:server=127.0.0.1:${input.port} rated;`
      : `location / { index index.html; }
        access_log ${input.path} ${input.format ?? 'combined'}${input.buffer ? ` buffer=${input.buffer}` : ''}${input.flush ? ` flush=${input.flush}` : ''};`;
  return `# rendered by test/helpers/nginx.ts
daemon off;
master_process on;
worker_processes 1;
user nobody nogroup;
pid ${p('nginx.pid')};
error_log ${p('logs/error.log')} info;

events {
    worker_connections 256;
}

http {
    access_log ${p('logs/access.log')};
    client_body_temp_path ${p('tmp/client_body')};
    proxy_temp_path ${p('tmp/proxy')};
    fastcgi_temp_path ${p('tmp/fastcgi')};
    uwsgi_temp_path ${p('tmp/uwsgi')};
    scgi_temp_path ${p('tmp/scgi')};
    default_type text/plain;
    keepalive_timeout 5s;

    log_format rated '$remote_addr $request_method $status $host $request_uri';
    upstream rated { server ${ratedSocket === undefined ? `127.0.0.1:${ratedPort}` : `unix:${ratedSocket}`}; keepalive 16; }

    server {
        listen 0.0.0.0:${port};
        listen [::]:${port} ipv6only=on;
        server_name _;
        root ${p('html')};

        ${location}
    }
}
`;
}

/**
 * Starts nginx in `namespace` with its own prefix directory and waits until
 * it serves the static file on 127.0.0.1. Throws, with nginx's output and
 * error log, when it exits or does not answer in time.
 */
export async function startNginx(options: NginxOptions): Promise<Nginx> {
  const port = options.port ?? 80;
  const prefix = mkdtempSync(join(tmpdir(), 'rated-nginx-'));
  // Workers run as nobody and must read html/.
  chmodSync(prefix, 0o755);
  for (const dir of ['logs', 'tmp', 'html']) mkdirSync(join(prefix, dir), { mode: 0o755 });
  writeFileSync(join(prefix, 'html', 'index.html'), options.body ?? 'hello from nginx\n', { mode: 0o644 });
  const conf = renderNginxConf(prefix, port, options.ratedPort, options.input, options.token, options.ratedSocket);
  const confPath = join(prefix, 'nginx.conf');
  writeFileSync(confPath, conf);

  const ns = options.namespace;
  const child = spawn('ip', ['netns', 'exec', ns.name, NGINX, '-p', prefix, '-e', join(prefix, 'logs', 'error.log'), '-c', confPath], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => { output += s; });
  child.stderr.setEncoding('utf8').on('data', (s: string) => { output += s; });
  const state: { exited: { code: number | null; signal: NodeJS.Signals | null } | null } = { exited: null };
  const exit = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      state.exited = { code, signal };
      resolve();
    });
    child.once('error', (err) => {
      output += `spawn failed: ${err.message}\n`;
      state.exited = { code: null, signal: null };
      resolve();
    });
  });

  const read = (name: string): string => {
    try {
      return readFileSync(join(prefix, 'logs', name), 'utf8');
    } catch {
      return '';
    }
  };
  let stopped: Promise<void> | null = null;
  const handle: Nginx = {
    prefix,
    pid: child.pid ?? -1,
    port,
    conf,
    errorLog: () => read('error.log'),
    accessLog: () => read('access.log'),
    stop: () => {
      stopped ??= stopProcess(child, exit, () => state.exited !== null).finally(() => {
        rmSync(prefix, { recursive: true, force: true });
      });
      return stopped;
    },
  };

  const timeoutMs = options.startTimeoutMs ?? 10_000;
  try {
    await waitFor(async () => {
      // An exited nginx ends the wait at once; the check below reports it.
      if (state.exited !== null) return true;
      const probe = await ns.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '1', `http://127.0.0.1:${port}/`]);
      return probe.stdout === '200';
    }, { timeoutMs, intervalMs: 100, what: `nginx to answer on 127.0.0.1:${port}` });
    if (state.exited !== null) throw new Error(`nginx exited early (${JSON.stringify(state.exited)})`);
    return handle;
  } catch (err) {
    const detail = `${(err as Error).message}\n--- nginx output ---\n${output}\n--- error.log ---\n${handle.errorLog()}`;
    await handle.stop();
    throw new Error(detail, { cause: err });
  }
}

/**
 * Stops nginx by PID: SIGQUIT lets it finish in-flight requests; after a few
 * seconds SIGKILL ends the master and the workers it started (found before
 * the kill, since an orphaned worker would keep the namespace alive).
 */
async function stopProcess(child: ChildProcess, exit: Promise<void>, hasExited: () => boolean, graceMs = 3000): Promise<void> {
  const pid = child.pid;
  if (pid === undefined || hasExited()) return;
  const workers = childrenOf(pid);
  child.kill('SIGQUIT');
  const timer = new Promise<boolean>((resolve) => {
    setTimeout(() => { resolve(false); }, graceMs).unref();
  });
  const done = await Promise.race([exit.then(() => true), timer]);
  if (done) return;
  for (const w of [...workers, ...childrenOf(pid)]) {
    try {
      process.kill(w, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  child.kill('SIGKILL');
  await exit;
}

/** Direct children of `pid`, from /proc. */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}
