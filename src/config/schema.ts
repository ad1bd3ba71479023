import { z } from 'zod';
import { parseListen, parseNetwork } from '../address.js';
import { parseDuration } from '../duration.js';
import { parseRedisUrl } from '../redis-url.js';
import { DEFAULT_SOCKET } from './read.js';

// One schema is the single source of the configuration's type, defaults and
// error messages. Durations are read as text ("90s", "6h") or seconds and
// become milliseconds.

const duration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const ms = parseDuration(value);
  if (ms === null) {
    ctx.addIssue({ code: 'custom', message: `expected a duration like "60s", "10m", "6h", "1d" or seconds, at most 3650d, got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  return ms;
});

const positiveDuration = duration.refine((ms) => ms > 0, 'must be longer than 0');

/** A string that must satisfy `ok`; the message shows what was received. */
function checked(ok: (s: string) => boolean, expected: string) {
  return z.string().superRefine((s, ctx) => {
    if (!ok(s)) ctx.addIssue({ code: 'custom', message: `expected ${expected}, got ${JSON.stringify(s)}` });
  });
}

const network = checked((s) => parseNetwork(s) !== null, 'an IP address or CIDR network');
const port = z.number().int().min(1).max(65535);
// The unspecified addresses are no client but are fine to listen on (every interface).
const host = checked((s) => {
  if (s === '0.0.0.0' || s === '::') return true;
  const n = parseNetwork(s);
  return n !== null && n.prefix === (n.family === 4 ? 32 : 128) && !s.includes('/');
}, 'an IP address to listen on');

const listen = checked((s) => parseListen(s) !== null, 'ADDRESS:PORT like 127.0.0.1:9466 or [::1]:9466');
const regex = checked((s) => {
  try {
    new RegExp(s);
    return true;
  } catch {
    return false;
  }
}, 'a regular expression');

// A program and its arguments, run without a shell: the path is absolute, so PATH decides nothing.
const program = z.array(z.string().min(1).max(4096)).min(1, 'expected [PROGRAM, ARG…]').max(64)
  .refine((argv) => argv[0]?.startsWith('/') === true, 'expected an absolute path first, like ["/usr/local/bin/notify", "--channel", "ops"]');

const httpReceiver = z.strictObject({
  address: host.default('127.0.0.1'),
  port: port.default(8080),
  header: z.string().regex(/^[A-Za-z0-9-]{1,64}$/, 'expected an HTTP header name').default('X-IP'),
  token: z.string().min(16, 'a token must have at least 16 characters').nullable().default(null),
  // A unix socket instead of TCP: only processes that may write it (nginx's user) can notify.
  socket: z.string().regex(/^\/\S{1,200}$/, 'expected an absolute path').nullable().default(null),
  socketGroup: z.string().regex(/^([a-z_][a-z0-9_-]{0,31}|\d{1,10})$/, 'expected a group name or number').nullable().default(null),
});

const udpReceiver = z.strictObject({
  address: host.default('127.0.0.1'),
  port: port.default(5514),
  pattern: regex.nullable().default(null),
});

const match = z.strictObject({
  path: z.string().min(1).refine((s) => s.startsWith('/') || s.startsWith('~'), 'expected "/prefix" or "~regex"').optional(),
  methods: z.array(z.string().regex(/^[A-Za-z]{1,16}$/, 'expected an HTTP method')).optional(),
  status: z.array(z.union([
    z.number().int().min(100).max(599),
    z.string().regex(/^[1-5]xx$/, 'expected a status like 404 or "4xx"'),
  ])).optional(),
  host: z.string().min(1).optional(),
});

const rule = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'expected a name of letters, digits, "_", "." or "-"'),
  match: match.prefault({}),
  limit: z.number().int().min(1),
  window: positiveDuration,
  block: positiveDuration,
});

const redisUrl = checked((s) => parseRedisUrl(s) !== null, 'a URL like redis://127.0.0.1:6379/0 (or rediss:// for TLS)');
const clusterUrl = checked((s) => parseRedisUrl(s)?.db === 0, 'a URL like redis://10.0.0.1:7000 (Redis Cluster has database 0 only)');

const redis = z.strictObject({
  url: redisUrl.optional(),
  cluster: z.array(clusterUrl).min(1).optional(),
  // Braces would make the prefix the hash tag and put every key on one cluster slot.
  prefix: z.string().regex(/^[^{}\s]{1,64}$/, 'expected 1 to 64 characters without spaces or braces').default('rated:'),
  timeout: positiveDuration.default(500),
  syncInterval: positiveDuration.default(30_000),
}).refine((r) => (r.url === undefined) !== (r.cluster === undefined), 'set exactly one of url and cluster');

/** The configuration schema (SPEC §3). */
export const configSchema = z.strictObject({
  receivers: z.strictObject({
    http: httpReceiver.nullable().prefault({}),
    udp: udpReceiver.nullable().prefault({}),
    files: z.array(z.string().min(1)).default([]),
  }).prefault({}),
  rules: z.array(rule).default([{ name: 'default', match: {}, limit: 360, window: 120_000, block: 21_600_000 }])
    .refine((rules) => new Set(rules.map((r) => r.name)).size === rules.length, 'rule names must be unique'),
  escalation: z.strictObject({
    factor: z.number().min(1).default(2),
    max: positiveDuration.default(604_800_000),
    memory: duration.default(604_800_000),
  }).prefault({}),
  allow: z.array(network).default(['127.0.0.0/8', '::1/128']),
  allowSelf: z.boolean().default(true),
  ipv6Prefix: z.number().int().min(16).max(128).default(64),
  tracking: z.strictObject({
    maxClients: z.number().int().min(1000).max(50_000_000).default(1_000_000),
  }).prefault({}),
  firewall: z.strictObject({
    backend: z.enum(['auto', 'nftables', 'ipset', 'iptables', 'dry-run']).default('auto'),
    table: z.string().regex(/^[a-z][a-z0-9_]{0,23}$/, 'expected a lowercase name of at most 24 letters, digits or "_"').default('rated'),
    hook: z.enum(['input', 'forward', 'prerouting']).default('input'),
    priority: z.number().int().min(-400).max(400).default(-10),
    flushOnExit: z.boolean().default(false),
    checkInterval: positiveDuration.default(30_000),
    maxBlocks: z.number().int().min(1).max(16_777_216).default(1_048_576),
  }).prefault({}),
  hooks: z.strictObject({
    block: program.nullable().default(null),
    unblock: program.nullable().default(null),
    timeout: positiveDuration.default(10_000),
    concurrency: z.number().int().min(1).max(64).default(4),
    queue: z.number().int().min(1).max(1_000_000).default(10_000),
    batch: z.boolean().default(false),
  }).prefault({}),
  metrics: z.strictObject({
    listen: listen.nullable().default(null),
  }).prefault({}),
  control: z.strictObject({
    socket: z.string().min(1).default(DEFAULT_SOCKET),
  }).prefault({}),
  state: z.strictObject({
    dir: z.string().min(1).default('/var/lib/rated'),
  }).prefault({}),
  redis: redis.nullable().default(null),
  log: z.strictObject({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  }).prefault({}),
});

/** The validated, defaulted configuration; durations in milliseconds. */
export type Config = z.output<typeof configSchema>;
export type RuleConfig = Config['rules'][number];
