import { request } from 'node:http';
import { RatedError } from '../errors.js';

export interface ApiResponse {
  readonly status: number;
  readonly body: unknown;
  readonly text: string;
}

/** Thrown when no daemon answers on the control socket. */
export class DaemonDown extends RatedError {
  constructor(path: string, why: string) {
    super('DAEMON_UNREACHABLE', `rated is not running (control socket ${path}: ${why}); start it with "rated run" or check --socket`);
  }
}

/** One request to the daemon's control API. */
export function callApi(socketPath: string, method: string, path: string, body?: unknown, timeoutMs = 30_000): Promise<ApiResponse> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request({
      socketPath, method, path, timeout: timeoutMs,
      headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = text;
        if ((res.headers['content-type'] ?? '').includes('json')) {
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = text;
          }
        }
        resolve({ status: res.statusCode ?? 0, body: parsed, text });
      });
    });
    req.on('timeout', () => req.destroy(new RatedError('DAEMON_UNREACHABLE', `rated did not answer within ${timeoutMs} ms on ${socketPath}`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err instanceof RatedError) return reject(err);
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') return reject(new DaemonDown(socketPath, err.code === 'ENOENT' ? 'no such file' : 'connection refused'));
      if (err.code === 'EACCES') return reject(new RatedError('DAEMON_UNREACHABLE', `permission denied on ${socketPath}; run as root or as a member of the socket's group`));
      reject(new RatedError('DAEMON_UNREACHABLE', `control socket ${socketPath}: ${err.message}`));
    });
    req.end(payload);
  });
}

/** The error a failed API answer stands for. */
export function apiError(res: ApiResponse): RatedError {
  const body = res.body as { error?: unknown } | null;
  const message = typeof body === 'object' && body !== null && typeof body.error === 'string' ? body.error : `control API answered ${res.status}`;
  if (res.status === 400) return new RatedError('USAGE', message);
  if (res.status === 404) return new RatedError('NOT_FOUND', message);
  if (res.status === 409) return new RatedError('REFUSED', message);
  return new RatedError('DAEMON_UNREACHABLE', message);
}

/**
 * GET of a listing (`[` then one JSON value per line, as the daemon sends
 * it), each value handed over as it arrives; a failed answer throws the
 * API's error. `raw` gets the text as it comes, for `--json`.
 */
export function streamList(socketPath: string, path: string, onValue: (value: unknown) => void, raw?: (text: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method: 'GET', path }, (res) => {
      if (res.statusCode !== 200) {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = text;
          try {
            body = JSON.parse(text);
          } catch {
            // not JSON: the text itself
          }
          reject(apiError({ status: res.statusCode ?? 0, body, text }));
        });
        return;
      }
      let rest = '';
      res.setEncoding('utf8');
      res.on('data', (text: string) => {
        raw?.(text);
        const lines = (rest + text).split('\n');
        rest = lines.pop() ?? '';
        for (const line of lines) if (line.startsWith('{')) onValue(JSON.parse(line.endsWith(',') ? line.slice(0, -1) : line));
      });
      res.on('end', () => resolve());
      res.on('error', reject);
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') return reject(new DaemonDown(socketPath, err.code === 'ENOENT' ? 'no such file' : 'connection refused'));
      if (err.code === 'EACCES') return reject(new RatedError('DAEMON_UNREACHABLE', `permission denied on ${socketPath}; run as root or as a member of the socket's group`));
      reject(new RatedError('DAEMON_UNREACHABLE', `control socket ${socketPath}: ${err.message}`));
    });
    req.end();
  });
}
