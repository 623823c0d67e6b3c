/**
 * Configuration: every command's settings come from here, loaded once and passed in. Nothing
 * else reads process.env.
 *
 * Each kind of command has ONE schema, written with TypeBox, which is at the same time the
 * documentation of every key (meaning, unit, default, environment variable, flag) and the type
 * (`Static`): `ConfigSchema` for the service (`serve`, `token create`, the demo's service) and
 * `ClientConfigSchema` for the API client commands (`rescan`, `blockdev`, `assist-extend`,
 * `servers`, `volume …`). One loader (`loadSettings`) reads both.
 *
 * Sources, highest first: command-line flags > environment variables > the JSON file given with
 * `--config FILE` (service settings only; an object of the keys below, camelCase) > defaults.
 * An empty environment variable counts as unset. Every value is checked against the schema
 * (TypeBox's compiled checker) and a bad one is refused with a ConfigError naming the key and
 * where the value came from; the CLI exits 2 on it.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { Type, type Static, type TObject, type TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { maxConnectionsPerApi } from './util/fdLimit.js';

export { FD_RESERVE, maxConnectionsPerApi, softFdLimit } from './util/fdLimit.js';

/**
 * Where a key may be set besides the file, kept in the key's schema as documentation:
 * `env` (variable name), `flag` (`serve`'s flag, which `api` has too where it applies; a flag
 * of other commands names them in parentheses: `--host (compute-agent)`), `unit`, `choices` (the
 * allowed values, for messages), `flagOnly` (never from the environment or a file).
 */
interface KeyDoc {
  env?: string;
  flag?: string;
  unit?: string;
  choices?: readonly string[];
  flagOnly?: boolean;
}

const int = (description: string, dflt: number, doc: KeyDoc, minimum = 0, maximum?: number) =>
  Type.Integer({ description, default: dflt, minimum, ...(maximum === undefined ? {} : { maximum }), ...doc });
const ms = (description: string, dflt: number, doc: Omit<KeyDoc, 'unit'> = {}, minimum = 0) => int(description, dflt, { ...doc, unit: 'ms' }, minimum);
const port = (description: string, dflt: number, doc: KeyDoc) => int(description, dflt, { ...doc, unit: 'TCP port' }, 0, 65535);
const str = (description: string, dflt: string, doc: KeyDoc = {}) => Type.String({ description, default: dflt, minLength: 1, ...doc });
const oneOf = (choices: readonly string[]) => `^(${choices.join('|')})$`;

/** Volume backends this build has. */
export const KNOWN_BACKENDS = ['file', 'block', 'iscsi'] as const;
/** pino's levels, and `silent`. */
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** The service's settings: one key each, with its meaning, unit, default, env name and flag. */
export const ConfigSchema = Type.Object(
  {
    host: str('Listen address of the compute API', '127.0.0.1', { env: 'ONLINE_EXTEND_HOST', flag: '--host' }),
    port: port("Port of the compute API (Nova's default port; 0 = any free one)", 8774, { env: 'ONLINE_EXTEND_PORT', flag: '--port' }),
    volumeHost: str('Listen address of the volume API', '127.0.0.1'),
    volumePort: port("Port of the volume API (Cinder's default port; 0 = any free one)", 8776, { env: 'ONLINE_EXTEND_VOLUME_PORT', flag: '--volume-port' }),
    dataDir: str('Directory of the SQLite database and other state (made absolute)', './data', { env: 'ONLINE_EXTEND_DATA_DIR', flag: '--data-dir', unit: 'path' }),
    driver: Type.Union([Type.Literal('fake'), Type.Literal('libvirt')], {
      description: 'Virt driver (`--fake-inventory` alone implies fake)',
      default: 'libvirt',
      env: 'ONLINE_EXTEND_DRIVER',
      flag: '--driver',
      choices: ['fake', 'libvirt'],
    }),
    fakeInventory: Type.Optional(Type.String({ description: "Servers for the fake driver (JSON file); required by it", minLength: 1, flag: '--fake-inventory', unit: 'path' })),
    libvirtUri: str('libvirt URI', 'qemu:///system', { env: 'ONLINE_EXTEND_LIBVIRT_URI', flag: '--libvirt-uri' }),
    virtType: Type.Union([Type.Literal('qemu'), Type.Literal('kvm')], {
      description: "Domain type of the servers the libvirt driver creates (Nova's [libvirt] virt_type): qemu (TCG) or kvm (with the host's CPU, host-passthrough). The lab passes what its KVM probe chose",
      default: 'qemu',
      env: 'ONLINE_EXTEND_VIRT_TYPE',
      choices: ['qemu', 'kvm'],
    }),
    defaultProject: str('Project of servers whose domain metadata names none', 'admin', { env: 'ONLINE_EXTEND_DEFAULT_PROJECT', flag: '--default-project' }),
    policyFile: Type.Optional(Type.String({ description: 'Policy overrides (JSON, oslo.policy rules)', minLength: 1, env: 'ONLINE_EXTEND_POLICY_FILE', flag: '--policy', unit: 'path' })),
    computeHost: str("This compute host's name in the inventory (Nova's host; compute-agent's RPC topic is compute.<name>)", hostname(), { flag: '--host (compute-agent)' }),
    syncIntervalMs: ms("Re-read the hypervisor's inventory this often (0 = only at start and on demand)", 10_000, { flag: '--sync-interval' }),
    logLevel: Type.String({ description: 'Log level', default: 'info', pattern: oneOf(LOG_LEVELS), env: 'ONLINE_EXTEND_LOG_LEVEL', choices: LOG_LEVELS }),
    backends: Type.Array(Type.String({ pattern: oneOf(KNOWN_BACKENDS) }), {
      description: 'Volume backends to enable (comma-separated in env and flag); at least one',
      minItems: 1,
      default: ['file'],
      env: 'ONLINE_EXTEND_BACKENDS',
      flag: '--backends',
      choices: KNOWN_BACKENDS,
    }),
    defaultBackend: Type.String({ description: 'Backend of volumes created without a volume_type (the first enabled one if not enabled)', default: 'file', pattern: oneOf(KNOWN_BACKENDS), choices: KNOWN_BACKENDS }),
    iscsiPortal: str('iSCSI portal (tgtd) of the iscsi backend', '127.0.0.1:3260', { env: 'ONLINE_EXTEND_ISCSI_PORTAL', flag: '--iscsi-portal', unit: 'host:port' }),
    tgtControlPort: port("tgtadm's control port for the iscsi backend (0 = tgtadm's default)", 0, { env: 'ONLINE_EXTEND_TGT_CONTROL_PORT', flag: '--tgt-control-port' }),
    extendTimeoutMs: ms('Longest an in-use extend may take before it ends in error_extending; above 0', 15 * 60_000, { flag: '--extend-timeout' }, 1),
    extendStepDelayMs: ms('Sleep before every extend step: for crash-recovery tests only', 0, { flag: '--extend-step-delay' }),
    extendWatchdogMs: ms('How often the extend watchdog restarts missing runs and ends extends past their deadline; above 0', 1_000, {}, 1),
    volumeReconcileMs: ms(
      'How often volumes left creating, attaching, detaching or deleting by an operation that did not finish are brought to an end (volume/reconciler.ts); also how long one must be untouched; above 0',
      5_000,
      {},
      1,
    ),
    volumeApi: Type.Boolean({ description: "Run the volume API (Cinder's role) in this process too", default: true, flag: '--no-volume-api' }),
    httpHeadersTimeoutMs: ms(
      'HTTP, per API: the request line and headers must arrive within this of the start of a request, and a new connection may stay silent no longer (slowloris, idle connects: 408); above 0, at most httpRequestTimeoutMs',
      10_000,
      { flag: '--http-headers-timeout' },
      1,
    ),
    httpRequestTimeoutMs: ms('HTTP: the whole request, body included, must arrive within this (408); above 0', 30_000, { flag: '--http-request-timeout' }, 1),
    httpKeepAliveTimeoutMs: ms('HTTP: a keep-alive connection idle this long after a response is closed (Node adds 1 s of margin); above 0', 5_000, { flag: '--http-keep-alive-timeout' }, 1),
    httpMaxConnections: int(
      'HTTP: open connections per API. 0 = automatic: the soft open-files limit, less FD_RESERVE for the database, hypervisor and storage, shared between the APIs this process runs. At the cap, a new connection closes the least recently active one that is not serving a request',
      0,
      { flag: '--http-max-connections', unit: 'connections' },
    ),
    httpSendTimeoutMs: ms(
      'HTTP: a connection whose response bytes have waited in this process this long with no write completing is cut (a client that sends requests and never reads). Per connection there are also fixed bounds: 16 requests answered at once (pipelining) and 4 MiB of answers not yet taken; above 0',
      10_000,
      { flag: '--http-send-timeout' },
      1,
    ),
    shutdownGraceMs: ms(
      'On SIGTERM/SIGINT: requests already being served may finish for this long; then every connection is closed and the process exits. Connections with no complete request close at once',
      10_000,
      { flag: '--shutdown-grace' },
    ),
    auth: Type.String({
      description:
        "How tokens are checked: `token` (this service's own tokens, from `token create` or the embedded Keystone endpoint), `keystone` (validated against a real Keystone at keystoneUrl, as keystonemiddleware does), `noauth` (Cinder's noauth: `X-Auth-Token: user:project` is trusted; labs only)",
      default: 'token',
      pattern: oneOf(['token', 'keystone', 'noauth']),
      env: 'ONLINE_EXTEND_AUTH',
      flag: '--auth',
      choices: ['token', 'keystone', 'noauth'],
    }),
    identityPort: port("Port of the embedded Keystone v3 endpoint (Keystone's default port; 0 = any free one)", 5000, { env: 'ONLINE_EXTEND_IDENTITY_PORT', flag: '--identity-port' }),
    identityTokenTtlMs: ms(
      "Lifetime of a token the embedded Keystone issues for a password (Keystone's [token] expiration, 1 h); a token made from a token expires with it; above 0",
      3_600_000,
      { env: 'ONLINE_EXTEND_IDENTITY_TOKEN_TTL_MS', flag: '--identity-token-ttl' },
      1,
    ),
    imagePort: port("Port of the image API (Glance's default port; 0 = any free one)", 9292, { env: 'ONLINE_EXTEND_IMAGE_PORT', flag: '--image-port' }),
    // GET /metrics (Prometheus text format, no token) is served by serve and api. Unset, it is a
    // route of the compute API (its host and port), as node_exporter-style scraping expects one
    // address per process. Set, it moves to its own listener on metricsHost:metricsPort and the
    // compute API no longer answers it, so it can be bound where only the scraper reaches it.
    metricsPort: Type.Optional(Type.Integer({
      description: "Own port for GET /metrics, off the compute API's (0 = any free one); unset: /metrics is served on the compute API's port",
      minimum: 0,
      maximum: 65535,
      unit: 'TCP port',
      env: 'ONLINE_EXTEND_METRICS_PORT',
      flag: '--metrics-port',
    })),
    metricsHost: str('Listen address of GET /metrics when metricsPort is set; refused without metricsPort (it would be ignored)', '127.0.0.1', { env: 'ONLINE_EXTEND_METRICS_HOST', flag: '--metrics-host' }),
    // Server-Timing is on every answer (auth, total), and by default its per-layer parts too
    // (store, lock, driver, rpc, libvirt: issue H asks for them on every response). Each layer
    // adds its time to the request's timings, which the services hand on themselves (no
    // AsyncLocalStorage, util/timing.ts): a few us per request for the parts' bookkeeping (the
    // timed store, driver and RPC calls, the longer header); false keeps auth and total only.
    serverTimingDetail: Type.Boolean({
      description: 'Server-Timing with the time per layer (store, lock, driver, rpc, libvirt) besides auth and total; costs a few µs of CPU per request for the parts\' bookkeeping; false: auth and total only',
      default: true,
      env: 'ONLINE_EXTEND_SERVER_TIMING_DETAIL',
      flag: '--server-timing-detail',
    }),
    keystoneUrl: Type.Optional(Type.String({ description: 'With auth=keystone: the real Keystone (its /v3 URL)', minLength: 1, env: 'ONLINE_EXTEND_KEYSTONE_URL', flag: '--keystone-url', unit: 'URL' })),
    keystoneServiceUser: str('With auth=keystone: the service user this service validates tokens and calls compute as (it needs the service and, with the default policy, admin roles on its project)', 'online-extend', { env: 'ONLINE_EXTEND_KEYSTONE_SERVICE_USER', flag: '--keystone-service-user' }),
    keystoneServiceProject: str('With auth=keystone: the service user\'s project', 'service', { env: 'ONLINE_EXTEND_KEYSTONE_SERVICE_PROJECT', flag: '--keystone-service-project' }),
    keystoneServicePasswordFile: Type.Optional(Type.String({ description: 'With auth=keystone: file holding the service user\'s password', minLength: 1, env: 'ONLINE_EXTEND_KEYSTONE_SERVICE_PASSWORD_FILE', flag: '--keystone-service-password-file', unit: 'path' })),
    keystoneTokenCacheMs: ms('With auth=keystone: how long a validation (valid or not) is cached (keystonemiddleware token_cache_time; short so that a revoked token stops working soon)', 5_000, { flag: '--keystone-token-cache' }),
    // Scale-out (G): `online-extend api` and `compute-agent` share state and talk over a broker.
    databaseUrl: Type.Optional(
      Type.String({
        description:
          'The shared database (postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, `?host=/dir` for a unix socket; sqlite:///PATH for one host). Unset: the SQLite file in the data dir (serve\'s embedded default)',
        minLength: 1,
        pattern: '^(postgresql|postgres|sqlite)://',
        env: 'ONLINE_EXTEND_DATABASE_URL',
        flag: '--database-url (api, compute-agent, token create, user, flavor, image)',
        unit: 'URL',
      }),
    ),
    transportUrl: Type.Optional(
      Type.String({
        description: "The message broker of compute RPC, as oslo.messaging's transport_url (rabbit://USER:PASSWORD@HOST:PORT/VHOST). Unset: compute calls stay in this process (serve)",
        minLength: 1,
        pattern: '^rabbit://',
        env: 'ONLINE_EXTEND_TRANSPORT_URL',
        flag: '--transport-url (api, compute-agent)',
        unit: 'URL',
      }),
    ),
    rpcTimeoutMs: ms("Deadline of one compute RPC call over the broker (oslo.messaging's rpc_response_timeout); above 0", 60_000, { env: 'ONLINE_EXTEND_RPC_TIMEOUT_MS', flag: '--rpc-timeout (api)' }, 1),
    serviceHeartbeatMs: ms("How often a compute agent writes its heartbeat (Nova's report_interval); above 0", 5_000, { flag: '--heartbeat-interval (compute-agent)' }, 1),
    serviceDownTimeMs: ms("A compute service whose last heartbeat is older than this is down: calls to its host fail at once with 503 (Nova's service_down_time); above 0", 30_000, { flag: '--service-down-time (api)' }, 1),
    extendLeaseMs: ms('A workflow worker holds the extend it drives for this long and renews it at a third of it; a dead worker\'s extend is taken over after it; above 0', 15_000, {}, 1),
    fakeLatencyMs: ms('Artificial latency of every fake-driver call: for tests of slow requests only', 0, { flag: '--fake-latency' }),
    allowOrphanVolumes: Type.Boolean({
      description:
        'Start even though volume files under DATA_DIR/volumes/ belong to no volume in the database (logged at error level, left alone). A flag only, never from the environment or a file: an override left set would hide the next lost database',
      default: false,
      flag: '--allow-orphan-volumes',
      flagOnly: true,
    }),
  },
  { additionalProperties: false },
);

/** The service's configuration, as `loadConfig` returns it (validated, derived keys filled in). */
export type Config = Static<typeof ConfigSchema>;

/** The client commands' settings (they talk to a running service over HTTP). */
export const ClientConfigSchema = Type.Object(
  {
    url: Type.String({ description: 'Compute API URL', default: 'http://127.0.0.1:8774', pattern: '^https?://', env: 'ONLINE_EXTEND_URL', flag: '--url (volume attach/detach: --compute-url)' }),
    volumeUrl: Type.String({ description: 'Volume API URL', default: 'http://127.0.0.1:8776', pattern: '^https?://', env: 'ONLINE_EXTEND_VOLUME_URL', flag: '--url (volume commands)' }),
    token: Type.Optional(Type.String({ description: 'Auth token (see `online-extend token create`); required', minLength: 1, env: 'ONLINE_EXTEND_TOKEN', flag: '--token' })),
    project: Type.Optional(Type.String({ description: "Project in the URL, the token's; required (no default: the API refuses another)", minLength: 1, env: 'ONLINE_EXTEND_PROJECT', flag: '--project' })),
  },
  { additionalProperties: false },
);

/** The client commands' configuration. */
export type ClientConfig = Static<typeof ClientConfigSchema>;

/** A refused setting: `key` is the config key, `message` names it and where its value came from. */
export class ConfigError extends Error {
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Values given per key (flags from the CLI, or a caller's overrides): strings or typed values. */
export type Flags<C> = Partial<Record<keyof C, unknown>>;

/** Where a value came from, for messages. */
type Source = 'default' | 'config file' | 'env' | 'flag';

const compiled = new WeakMap<TObject, ReturnType<typeof TypeCompiler.Compile>>();

/** What a schema accepts, in words (for messages). */
function expected(s: TSchema): string {
  if (Array.isArray(s.choices)) return `${s.type === 'array' ? 'a comma-separated list of' : 'one of'} ${(s.choices as string[]).join(', ')}`;
  if (s.type === 'integer') return s.maximum !== undefined ? `an integer from ${s.minimum} to ${s.maximum}` : s.minimum ? `an integer of at least ${s.minimum}` : 'a non-negative integer';
  if (s.type === 'boolean') return 'true or false';
  if (s.pattern === '^https?://') return 'an http:// or https:// URL';
  if (s.pattern === '^(postgresql|postgres|sqlite)://') return 'a postgresql://, postgres:// or sqlite:/// URL';
  if (s.pattern === '^rabbit://') return 'a rabbit://USER:PASSWORD@HOST:PORT/VHOST URL';
  return 'a non-empty string';
}

/**
 * A refused value as a message shows it: URLs (database, broker, Keystone) may carry a password
 * (`user:PASSWORD@`, `?password=`), masked whatever else is wrong with them.
 */
function shown(s: TSchema, value: unknown): string {
  if (s.unit !== 'URL' || typeof value !== 'string') return JSON.stringify(value);
  return JSON.stringify(value.replace(/:[^:@/?#]*@/g, ':***@').replace(/([?&;]password=)[^&;#]*/gi, '$1***'));
}

/** A string from the environment, a flag or a file turned into the key's type, where it plainly is one. */
function coerce(s: TSchema, v: unknown): unknown {
  if (typeof v !== 'string') return v;
  if (s.type === 'integer') return /^\d+$/.test(v.trim()) ? Number(v.trim()) : v;
  if (s.type === 'boolean') return v === 'true' ? true : v === 'false' ? false : v;
  if (s.type === 'array') return v.split(',').map((b) => b.trim()).filter(Boolean);
  return v;
}

/**
 * THE loader: `schema`'s keys from `flags` over `env` over `file` (read from `filePath`, named in
 * messages) over the schema's defaults,
 * each coerced to its type and checked. Throws ConfigError naming the first bad key (an unknown
 * key in the file, a flag-only key elsewhere, or a value the schema refuses).
 */
export function loadSettings<S extends TObject>(schema: S, sources: SettingSources<S>): Static<S> {
  return loadSettingsFrom(schema, sources).values;
}

/** What `loadSettings` reads: flags, the environment, a config file's object and its path (for messages). */
type SettingSources<S extends TObject> = { env?: NodeJS.ProcessEnv; flags?: Flags<Static<S>>; file?: Record<string, unknown>; filePath?: string };

/**
 * `loadSettings`, and where each key's value came from (`default`, `env NAME`, `config file PATH`,
 * `flag --NAME`): rules between keys need to know whether a key was given at all.
 */
function loadSettingsFrom<S extends TObject>(schema: S, sources: SettingSources<S>): { values: Static<S>; from: Record<string, string> } {
  const props = schema.properties as Record<string, TSchema>;
  const merged: Record<string, unknown> = {};
  const from: Record<string, string> = {};
  const set = (key: string, value: unknown, source: Source, name?: string) => {
    merged[key] = coerce(props[key]!, value);
    from[key] = name ? `${source} ${name}` : source;
  };
  for (const [key, s] of Object.entries(props)) if (s.default !== undefined) set(key, structuredClone(s.default), 'default');
  for (const [key, value] of Object.entries(sources.file ?? {})) {
    if (!props[key]) throw new ConfigError(key, `config ${key}: not a setting (in the config file; known: ${Object.keys(props).join(', ')})`);
    if (props[key].flagOnly) throw new ConfigError(key, `config ${key}: may only be given as the flag ${props[key].flag} (found in the config file)`);
    set(key, value, 'config file', sources.filePath);
  }
  for (const [key, s] of Object.entries(props)) {
    const name = s.env as string | undefined;
    const value = name === undefined ? undefined : sources.env?.[name];
    if (value !== undefined && value !== '') set(key, value, 'env', name);
  }
  for (const [key, value] of Object.entries(sources.flags ?? {})) {
    if (value === undefined) continue;
    if (!props[key]) throw new ConfigError(key, `config ${key}: not a setting`);
    set(key, value, 'flag', props[key].flag as string | undefined);
  }
  let check = compiled.get(schema);
  if (!check) compiled.set(schema, (check = TypeCompiler.Compile(schema)));
  const first = check.Errors(merged).First();
  if (first) {
    const key = first.path.split('/')[1] ?? '';
    const s = props[key];
    if (!s) throw new ConfigError(key, `config: ${first.message}`);
    throw new ConfigError(key, `config ${key}: expected ${expected(s)}, got ${shown(s, merged[key])} (from ${from[key]})`);
  }
  return { values: merged as Static<S>, from };
}

/** The JSON object in the config file `path`; throws ConfigError when it cannot be read or is not one. */
export function readConfigFile(path: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ConfigError('config', `config file ${path}: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError('config', `config file ${path}: expected a JSON object of settings`);
  return parsed as Record<string, unknown>;
}

/**
 * The service's configuration: `loadSettings(ConfigSchema, …)`, then the rules between keys:
 * the fake driver needs `fakeInventory`; `httpHeadersTimeoutMs` ≤ `httpRequestTimeoutMs`;
 * `defaultBackend` falls back to the first enabled backend; `dataDir` is made absolute;
 * `httpMaxConnections` 0 becomes the automatic cap (maxConnectionsPerApi); `auth` keystone needs
 * `keystoneUrl` and `keystoneServicePasswordFile`; `metricsHost` is refused without `metricsPort`
 * (from any source: it would be ignored). `file` is the path of
 * a JSON config file, if any. Throws ConfigError.
 */
export function loadConfig(env: NodeJS.ProcessEnv, flags: Flags<Config> = {}, file?: string): Config {
  const { values: c, from } = loadSettingsFrom(ConfigSchema, { env, flags, ...(file === undefined ? {} : { file: readConfigFile(file), filePath: file }) });
  // metricsHost only places metricsPort's listener: given alone it would be ignored, and the
  // operator who meant /metrics off the API's address would find it still there.
  if (c.metricsPort === undefined && from.metricsHost !== 'default') {
    throw new ConfigError(
      'metricsHost',
      `config metricsHost: given (from ${from.metricsHost}) without metricsPort, so it would be ignored (GET /metrics stays on the compute API's address); give metricsPort too (--metrics-port, env ONLINE_EXTEND_METRICS_PORT), or leave metricsHost unset`,
    );
  }
  if (c.driver === 'fake' && !c.fakeInventory) throw new ConfigError('fakeInventory', 'the fake driver needs --fake-inventory FILE');
  if (c.httpHeadersTimeoutMs > c.httpRequestTimeoutMs) {
    throw new ConfigError('httpHeadersTimeoutMs', 'config httpHeadersTimeoutMs: must not exceed httpRequestTimeoutMs (the headers are part of the request)');
  }
  if (c.auth === 'keystone' && !/^https?:\/\/[^/]/.test(c.keystoneUrl ?? '')) {
    throw new ConfigError('keystoneUrl', `config keystoneUrl: auth keystone needs the Keystone URL, an http:// or https:// URL (--keystone-url http://HOST:5000/v3), got ${JSON.stringify(c.keystoneUrl ?? null)}`);
  }
  if (c.auth === 'keystone' && !c.keystoneServicePasswordFile) {
    throw new ConfigError('keystoneServicePasswordFile', "config keystoneServicePasswordFile: auth keystone needs the file holding the service user's password");
  }
  if (!c.backends.includes(c.defaultBackend)) c.defaultBackend = c.backends[0] ?? 'file';
  c.dataDir = resolve(c.dataDir);
  try {
    c.httpMaxConnections = maxConnectionsPerApi(c.httpMaxConnections, c.volumeApi ? 2 : 1);
  } catch (err) {
    throw new ConfigError('httpMaxConnections', (err as Error).message);
  }
  return c;
}

/** The client commands' configuration (`loadSettings(ClientConfigSchema, …)`). Throws ConfigError. */
export function loadClientConfig(env: NodeJS.ProcessEnv, flags: Flags<ClientConfig> = {}): ClientConfig {
  return loadSettings(ClientConfigSchema, { env, flags });
}

/** The defaults of every service key, as documented in ConfigSchema. */
export const DEFAULTS: Config = loadSettings(ConfigSchema, {});

/** This process's environment: the one place the CLI reads it. */
export function processEnv(): NodeJS.ProcessEnv {
  return process.env;
}

