/** Where one Redis server is, as read from a `redis://` or `rediss://` URL. */
export interface RedisEndpoint {
  readonly host: string;
  readonly port: number;
  readonly username: string | undefined;
  readonly password: string | undefined;
  /** Database index from the URL's path. @default 0 */
  readonly db: number;
  /** True for `rediss://` (TLS). */
  readonly tls: boolean;
}

const PROTOCOLS = new Set(['redis:', 'rediss:']);

/**
 * Parses `redis://[user[:password]@]host[:port][/db]` (or `rediss://` for
 * TLS); null when it is not such a URL. The URL comes from the configuration,
 * so host names are allowed here; the port defaults to 6379.
 */
export function parseRedisUrl(text: string): RedisEndpoint | null {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return null;
  }
  if (!PROTOCOLS.has(url.protocol) || url.hostname === '' || url.search !== '' || url.hash !== '') return null;
  const port = url.port === '' ? 6379 : Number(url.port);
  if (!(Number.isInteger(port) && port >= 1 && port <= 65535)) return null;
  const path = url.pathname.replace(/^\//, '');
  if (path !== '' && !/^\d{1,2}$/.test(path)) return null;
  return {
    // WHATWG URL keeps IPv6 hosts in brackets; sockets want them bare.
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port,
    username: url.username === '' ? undefined : decodeURIComponent(url.username),
    password: url.password === '' ? undefined : decodeURIComponent(url.password),
    db: path === '' ? 0 : Number(path),
    tls: url.protocol === 'rediss:',
  };
}

/** The URL with its password replaced by `***`, for logs and `status`. */
export function redactUrl(text: string): string {
  try {
    const url = new URL(text);
    if (url.password !== '') url.password = '***';
    return url.toString();
  } catch {
    return '(unparsable URL)';
  }
}
