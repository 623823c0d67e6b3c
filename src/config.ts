/**
 * Configuration, loaded once (from CLI flags over environment over defaults) and passed in.
 * Nothing below this module reads process.env.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve } from 'node:path';

export interface Config {
  /** Address and port of the compute API (Nova's default port). */
  host: string;
  port: number;
  /** Address and port of the volume API (Cinder's default port). */
  volumeHost: string;
  volumePort: number;
  /** Directory for the SQLite database and other state. */
  dataDir: string;
  driver: 'fake' | 'libvirt';
  fakeInventory?: string;
  libvirtUri: string;
  /** Project for servers whose domain XML names none. */
  defaultProject: string;
  policyFile?: string;
  /** This compute host's name in the inventory. */
  computeHost: string;
  /** Re-read the hypervisor's inventory this often (0 = only at start and on demand). */
  syncIntervalMs: number;
  logLevel: string;
  /** Volume backends to enable: any of file, block, iscsi. */
  backends: string[];
  /** Backend for volumes created without a volume_type. */
  defaultBackend: string;
  /** iSCSI portal (tgtd) and tgtadm's control port. */
  iscsiPortal: string;
  tgtControlPort: number;
  /** Longest an in-use extend may take before it ends in error_extending. */
  extendTimeoutMs: number;
  /** Sleep before every extend step: for crash-recovery tests only. */
  extendStepDelayMs: number;
  /** How often the extend watchdog restarts missing runs and ends extends past their deadline. */
  extendWatchdogMs: number;
  /**
   * How often volumes left creating, attaching, detaching or deleting by an operation that did
   * not finish are brought to an end (volume/reconciler.ts); also how long one must be untouched.
   */
  volumeReconcileMs: number;
  /** Run the volume API (Cinder's role) in this process too. */
  volumeApi: boolean;
  /**
   * HTTP, per API: the request line and headers must arrive within this many ms of the start of a
   * request, and a new connection may stay silent no longer (slowloris, idle connects: 408).
   */
  httpHeadersTimeoutMs: number;
  /** HTTP: the whole request, body included, must arrive within this many ms (408). */
  httpRequestTimeoutMs: number;
  /** HTTP: a keep-alive connection idle this many ms after a response is closed (Node adds 1 s of margin). */
  httpKeepAliveTimeoutMs: number;
  /**
   * HTTP: open connections per API. 0 (the default) = automatic: the soft open-files limit, less
   * FD_RESERVE for the database, hypervisor and storage, shared between the APIs this process runs.
   * At the cap, a new connection closes the least recently active one that is not serving a request.
   */
  httpMaxConnections: number;
  /**
   * HTTP: a client must take its answers. A connection whose response bytes have waited in this
   * process this many ms with no write completing is cut (a client that sends requests and never
   * reads). Per connection there are also fixed bounds: 16 requests answered at once (pipelining)
   * and 4 MiB of answers not yet taken.
   */
  httpSendTimeoutMs: number;
  /**
   * On SIGTERM/SIGINT: requests already being served may finish for this many ms; then every
   * connection is closed and the process exits. Connections with no complete request close at once.
   */
  shutdownGraceMs: number;
  /** Artificial latency of every fake-driver call, in ms: for tests of slow requests only. */
  fakeLatencyMs: number;
  /**
   * Start even though volume files under `DATA_DIR/volumes/` belong to no volume in the database
   * (they are logged at error level and left alone). A flag only (`serve --allow-orphan-volumes`),
   * never from the environment: an override left set would hide the next lost database.
   */
  allowOrphanVolumes: boolean;
}

/** File descriptors kept for everything but HTTP connections (database, hypervisor, storage, logs). */
export const FD_RESERVE = 128;

export const DEFAULTS: Config = {
  host: '127.0.0.1',
  port: 8774,
  volumeHost: '127.0.0.1',
  volumePort: 8776,
  dataDir: './data',
  driver: 'libvirt',
  libvirtUri: 'qemu:///system',
  defaultProject: 'admin',
  computeHost: hostname(),
  syncIntervalMs: 10_000,
  logLevel: 'info',
  backends: ['file'],
  defaultBackend: 'file',
  iscsiPortal: '127.0.0.1:3260',
  tgtControlPort: 0,
  extendTimeoutMs: 15 * 60_000,
  extendStepDelayMs: 0,
  extendWatchdogMs: 1_000,
  volumeReconcileMs: 5_000,
  volumeApi: true,
  httpHeadersTimeoutMs: 10_000,
  httpRequestTimeoutMs: 30_000,
  httpKeepAliveTimeoutMs: 5_000,
  httpMaxConnections: 0,
  httpSendTimeoutMs: 10_000,
  shutdownGraceMs: 10_000,
  fakeLatencyMs: 0,
  allowOrphanVolumes: false,
};

/** Environment variables that set config keys (documented in the README). */
const ENV_KEYS: Record<string, keyof Config> = {
  ONLINE_EXTEND_HOST: 'host',
  ONLINE_EXTEND_PORT: 'port',
  ONLINE_EXTEND_VOLUME_PORT: 'volumePort',
  ONLINE_EXTEND_DATA_DIR: 'dataDir',
  ONLINE_EXTEND_DRIVER: 'driver',
  ONLINE_EXTEND_LIBVIRT_URI: 'libvirtUri',
  ONLINE_EXTEND_DEFAULT_PROJECT: 'defaultProject',
  ONLINE_EXTEND_POLICY_FILE: 'policyFile',
  ONLINE_EXTEND_LOG_LEVEL: 'logLevel',
  ONLINE_EXTEND_BACKENDS: 'backends',
  ONLINE_EXTEND_ISCSI_PORTAL: 'iscsiPortal',
  ONLINE_EXTEND_TGT_CONTROL_PORT: 'tgtControlPort',
};

const NUMERIC: ReadonlySet<keyof Config> = new Set([
  'port',
  'volumePort',
  'syncIntervalMs',
  'tgtControlPort',
  'extendTimeoutMs',
  'extendStepDelayMs',
  'extendWatchdogMs',
  'volumeReconcileMs',
  'httpHeadersTimeoutMs',
  'httpRequestTimeoutMs',
  'httpKeepAliveTimeoutMs',
  'httpMaxConnections',
  'httpSendTimeoutMs',
  'shutdownGraceMs',
  'fakeLatencyMs',
]);
const KNOWN_BACKENDS = new Set(['file', 'block', 'iscsi']);

export function loadConfig(env: NodeJS.ProcessEnv, flags: Partial<Record<keyof Config, unknown>> = {}): Config {
  const merged: Record<string, unknown> = { ...DEFAULTS };
  for (const [name, key] of Object.entries(ENV_KEYS)) {
    if (env[name] !== undefined && env[name] !== '') merged[key] = env[name];
  }
  for (const [key, value] of Object.entries(flags)) if (value !== undefined) merged[key] = value;
  for (const key of NUMERIC) {
    const n = Number(merged[key]);
    if (!Number.isInteger(n) || n < 0) throw new Error(`config ${key}: expected a non-negative integer, got ${String(merged[key])}`);
    merged[key] = n;
  }
  if (merged.driver !== 'fake' && merged.driver !== 'libvirt') {
    throw new Error(`config driver: expected "fake" or "libvirt", got ${String(merged.driver)}`);
  }
  if (merged.driver === 'fake' && !merged.fakeInventory) {
    throw new Error('the fake driver needs --fake-inventory FILE');
  }
  if (typeof merged.backends === 'string') merged.backends = merged.backends.split(',').map((b) => b.trim()).filter(Boolean);
  for (const b of merged.backends as string[]) {
    if (!KNOWN_BACKENDS.has(b)) throw new Error(`config backends: unknown backend "${b}" (use file, block, iscsi)`);
  }
  if (!(merged.backends as string[]).includes(String(merged.defaultBackend))) merged.defaultBackend = (merged.backends as string[])[0] ?? 'file';
  merged.volumeApi = merged.volumeApi !== false && merged.volumeApi !== 'false';
  merged.allowOrphanVolumes = merged.allowOrphanVolumes === true || merged.allowOrphanVolumes === 'true';
  merged.dataDir = resolve(String(merged.dataDir));
  for (const key of ['httpHeadersTimeoutMs', 'httpRequestTimeoutMs', 'httpKeepAliveTimeoutMs', 'httpSendTimeoutMs'] as const) {
    if ((merged[key] as number) === 0) throw new Error(`config ${key}: must be above 0 (a connection without a deadline can be held forever)`);
  }
  if ((merged.httpHeadersTimeoutMs as number) > (merged.httpRequestTimeoutMs as number)) {
    throw new Error('config httpHeadersTimeoutMs: must not exceed httpRequestTimeoutMs (the headers are part of the request)');
  }
  merged.httpMaxConnections = maxConnectionsPerApi(merged.httpMaxConnections as number, merged.volumeApi ? 2 : 1);
  return merged as unknown as Config;
}

/**
 * The connection cap of one API: `configured` if above 0, else the soft open-files limit less
 * FD_RESERVE, shared between `apis` servers (at least 16 each). Throws when a configured cap
 * does not fit under the open-files limit: the cap would never be reached before EMFILE.
 */
export function maxConnectionsPerApi(configured: number, apis: number, fdLimit: number | undefined = softFdLimit()): number {
  const n = Math.max(1, apis);
  if (configured > 0) {
    if (fdLimit !== undefined && configured * n + FD_RESERVE > fdLimit) {
      throw new Error(
        `config httpMaxConnections: ${configured} per API × ${n} API(s) + ${FD_RESERVE} reserved is above the open-files limit ${fdLimit}; lower it or raise \`ulimit -n\``,
      );
    }
    return configured;
  }
  return Math.max(16, Math.floor(((fdLimit ?? 1024) - FD_RESERVE) / n));
}

/** The soft RLIMIT_NOFILE of this process (Linux), or undefined where it cannot be read. */
export function softFdLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (!m) return undefined;
    return m[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(m[1]);
  } catch {
    return undefined;
  }
}
