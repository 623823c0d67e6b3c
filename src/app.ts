/**
 * Composition root: builds the store, driver, compute manager and APIs from a Config.
 * Tests build the same pieces with their own driver and store through `buildComputeApp`.
 *
 * Compute and the volume service never import each other: each reaches the other over HTTP
 * through the RPC boundary (src/rpc: HttpComputeClient, HttpVolumeClient), and find each other's
 * endpoint in a ServiceCatalog, filled as each API starts listening. The volume service's calls
 * to a compute API served by its own process skip the socket (rpc/inProcess.ts): same routes,
 * auth, policy and audit, without the HTTP round trip its extends would wait for at every step.
 */
import pino, { type Logger } from 'pino';
import { join } from 'node:path';
import type { Config } from './config.js';
import { SqliteStore } from './db/sqlite.js';
import type { FlavorRecord, ServerRecord, Store } from './db/store.js';
import { PolicyEnforcer } from './auth/policy.js';
import { TokenAuthenticator, type Authenticator } from './auth/tokens.js';
import { NoAuthAuthenticator } from './auth/noauth.js';
import { IdentityService } from './identity/keystone.js';
import { buildIdentityApp } from './identity/app.js';
import { SqliteUserStore } from './db/users.js';
import { ComputeManager } from './compute/manager.js';
import { LocalComputeRpc, timedComputeRpc, type ComputeRpc } from './compute/rpc.js';
import { Metrics } from './util/metrics.js';
import { timedMethods } from './util/timing.js';
import { listenMetrics, type MetricsListener } from './api/metrics.js';
import { ComputeServices, HostCheckedRpc, ServiceHeartbeat } from './compute/services.js';
import { registerServices } from './api/routes/compute/services.js';
import { ComputeAPI } from './compute/api.js';
import type { VirtDriver } from './virt/driver.js';
import { FakeDriver } from './virt/fake/driver.js';
import { createServer, DEFAULT_HTTP_LIMITS, drainServer, type App, type HttpLimits, type ServerDeps } from './api/server.js';
import { registerOnlineExtendVolume } from './api/routes/compute/onlineExtendVolume.js';
import { registerServers } from './api/routes/compute/servers.js';
import { registerVolumeConnections } from './api/routes/compute/volumeConnections.js';
import { registerExternalEvents } from './api/routes/compute/externalEvents.js';
import { registerServerLifecycle } from './api/routes/compute/serverLifecycle.js';
import { registerFlavors } from './api/routes/compute/flavors.js';
import { registerImageApi } from './api/routes/image/images.js';
import { ServerLifecycle } from './compute/servers.js';
import { registerVolumes } from './api/routes/volume/volumes.js';
import { registerAttachments } from './api/routes/volume/attachments.js';
import { registerComputeVersions, registerVolumeVersions } from './api/routes/versions.js';
import type { VolumeBackend } from './volume/backends/backend.js';
import { VOLUME_STATUSES } from './volume/lifecycle.js';
import { BlockBackend, FileBackend, IscsiBackend } from './volume/backends/index.js';
import { readCapacity } from './volume/backends/tgt.js';
import { storageChecked } from './volume/backends/storageChecked.js';
import { HttpComputeClient, type ComputeForVolumes } from './rpc/computeClient.js';
import { injectDispatch } from './rpc/inProcess.js';
import { HttpVolumeClient, type VolumesForCompute } from './rpc/volumeClient.js';
import { ServiceCatalog } from './rpc/catalog.js';
import { ExtendWorkflow } from './volume/extend/workflow.js';
import type { WorkflowOptions } from './volume/extend/options.js';
import { VolumeService } from './volume/service.js';
import { VolumeAttachService } from './volume/attach.js';
import { InFlight, VolumeReconciler } from './volume/reconciler.js';
import { issueToken, ServiceToken, serviceUserOf } from './auth/tokens.js';
import { KeystoneAuthenticator } from './auth/keystone.js';
import { ConfigError, DEFAULTS } from './config.js';
import { DIR_MODE, INSTANCES_DIR, openDataDir, SERVICE_TOKEN_FILE, VOLUMES_DIR, type OpenedDataDir } from './db/dataDir.js';
import { openStoreUrl, type OpenedStore } from './db/open.js';
import { mkdirSync } from 'node:fs';
import { randomUUID } from 'node:crypto';

/** The extend workflow's worker name in `serve` (see where it is passed). */
export const SERVE_WORKFLOW_OWNER = 'serve';

/** The user compute's own calls to the volume service are made as (a delete resumed at start-up). */
const COMPUTE_USER = 'online-extend-compute';

/** What the compute API is built from (defaults: host `compute-1`, project `admin`, the default policy). */
export interface ComputeAppDeps {
  store: Store;
  driver: VirtDriver;
  logger: Logger;
  policy?: PolicyEnforcer;
  computeHost?: string;
  defaultProject?: string;
  /** The volume service, over its client: os-volume_attachments attach and detach through it (absent: not served). */
  volumes?: VolumesForCompute;
  /** HTTP timeouts, connection cap and drain grace (Config defaults otherwise). */
  http?: Partial<HttpLimits>;
  /** How callers are authenticated (default: a TokenAuthenticator on `store`). */
  auth?: Authenticator;
  /** A server's flavor by id, for Nova's 2.47 flavor dict (absent: servers show `flavor: {}` from 2.47). */
  lookupFlavor?: (id: string) => Promise<FlavorRecord | undefined>;
  /** A token for the volume service in a server's project, for deletes resumed at start-up (ServerLifecycleOptions.recoveryToken). */
  recoveryToken?: (server: ServerRecord) => Promise<string>;
  /** A compute service whose heartbeat is older than this is down in os-services (Config.serviceDownTimeMs; default its default). */
  serviceDownTimeMs?: number;
  /** How often `heartbeat.start()` writes this host's heartbeat (Config.serviceHeartbeatMs; default its default). */
  serviceHeartbeatMs?: number;
  /** The process's metrics (one Registry per process): RPC latency and requests are recorded (absent: none). */
  metrics?: Metrics;
  /** Serve GET /metrics on the compute API's port (default: yes when `metrics` is given; no when a separate metrics port serves it). */
  serveMetrics?: boolean;
  /** Server-Timing's per-layer parts (Config serverTimingDetail, on by default; off: auth and total only). */
  timingDetail?: boolean;
}

/** The compute API and the pieces behind it. */
export interface ComputeApp extends ComputeApi {
  manager: ComputeManager;
  /** This host's `nova-compute` heartbeat: written once when built; `start()` keeps it going (serve). */
  heartbeat: ServiceHeartbeat;
}

/**
 * The compute API (Nova's role) on `deps.driver`: routes registered, inventory synced, and task
 * states a previous process left on this host cleared (ComputeAPI.clearStaleTasks). Calls reach
 * the driver in-process (LocalComputeRpc); the host's `nova-compute` service is recorded (one
 * heartbeat), so os-services lists it.
 */
export async function buildComputeApp(deps: ComputeAppDeps): Promise<ComputeApp> {
  const metrics = deps.metrics;
  const manager = new ComputeManager({
    host: deps.computeHost ?? 'compute-1',
    // With metrics: driver errors counted by code; with timingDetail too, driver and store time in Server-Timing.
    driver: metrics ? timedMethods(deps.driver, 'driver', (err) => metrics.countDriverError(err)) : deps.driver,
    store: metrics && deps.timingDetail ? timedMethods(deps.store, 'store') : deps.store,
    defaultProjectId: deps.defaultProject ?? 'admin',
    logger: deps.logger.child({ component: 'compute-manager' }),
  });
  const heartbeat = new ServiceHeartbeat({ store: deps.store, host: manager.host, intervalMs: deps.serviceHeartbeatMs ?? DEFAULTS.serviceHeartbeatMs, logger: deps.logger.child({ component: 'compute-services' }) });
  await heartbeat.beat();
  // Its store time (os-services, host checks) in Server-Timing as the other services'; the heartbeat's writes are no request's.
  const services = new ComputeServices({ store: metrics && deps.timingDetail ? timedMethods(deps.store, 'store') : deps.store, downTimeMs: deps.serviceDownTimeMs ?? DEFAULTS.serviceDownTimeMs });
  const api = await buildComputeApi({
    store: deps.store,
    logger: deps.logger,
    rpc: new LocalComputeRpc(manager),
    services,
    host: manager.host,
    ...(deps.policy ? { policy: deps.policy } : {}),
    ...(deps.volumes ? { volumes: deps.volumes } : {}),
    ...(deps.http ? { http: deps.http } : {}),
    ...(deps.auth ? { auth: deps.auth } : {}),
    ...(deps.lookupFlavor ? { lookupFlavor: deps.lookupFlavor } : {}),
    ...(deps.recoveryToken ? { recoveryToken: deps.recoveryToken } : {}),
    ...(deps.metrics ? { metrics: deps.metrics } : {}),
    ...(deps.serveMetrics === undefined ? {} : { serveMetrics: deps.serveMetrics }),
    ...(deps.timingDetail ? { timingDetail: true } : {}),
  });
  // Before the first sync: a build an earlier process left half done fails (its record is kept).
  await api.servers.recover(manager.host);
  await manager.syncInventory();
  await api.compute.clearStaleTasks(manager.host);
  // volume-extended events an earlier process accepted but did not finish: run again (idempotent).
  await api.compute.resumeExternalEvents(manager.host);
  return { ...api, manager, heartbeat };
}

/**
 * What the compute API alone is built from: the hosts behind `rpc` (in-process for `serve`, over
 * the broker for the `api` role), the compute services (os-services, host checks), and where new
 * servers go: `host` (one host) or `chooseHost` (the `api` role: ComputeServices.chooseHost).
 */
export interface ComputeApiDeps extends Omit<ComputeAppDeps, 'driver' | 'computeHost' | 'defaultProject' | 'serviceDownTimeMs' | 'serviceHeartbeatMs'> {
  rpc: ComputeRpc;
  services: ComputeServices;
  host?: string;
  chooseHost?: (exclude?: ReadonlySet<string>) => Promise<string>;
  /** Show each server's host_status from its host's compute service (the api role); else `UP` (serve). */
  hostStatusFromServices?: boolean;
}

/** The compute API without a driver: the app, the services behind its routes, and its auth. */
export interface ComputeApi {
  app: App;
  compute: ComputeAPI;
  /** POST and DELETE /servers: builds and deletes in the background (`servers.idle()` waits for them). */
  servers: ServerLifecycle;
  /** Compute services: os-services, host checks, the host chooser. */
  services: ComputeServices;
  auth: Authenticator;
  policy: PolicyEnforcer;
}

/**
 * The compute API's app and routes over `deps.rpc`, with no driver in this process (the `api`
 * role) or with one behind LocalComputeRpc (buildComputeApp). Recovers nothing: start-up recovery
 * of a host is its owner's (buildComputeApp for serve).
 */
export async function buildComputeApi(deps: ComputeApiDeps): Promise<ComputeApi> {
  const rpc = deps.metrics ? timedComputeRpc(deps.rpc, deps.metrics) : deps.rpc;
  if (deps.metrics && deps.timingDetail) deps = { ...deps, store: timedMethods(deps.store, 'store') };
  const compute = new ComputeAPI({ store: deps.store, rpc, logger: deps.logger.child({ component: 'compute-api' }) });
  const servers = new ServerLifecycle({
    store: deps.store,
    rpc,
    ...(deps.host === undefined ? {} : { host: deps.host }),
    ...(deps.chooseHost ? { chooseHost: deps.chooseHost } : {}),
    logger: deps.logger.child({ component: 'compute-servers' }),
    ...(deps.volumes ? { volumes: deps.volumes } : {}),
    ...(deps.recoveryToken ? { recoveryToken: deps.recoveryToken } : {}),
  });
  const auth = deps.auth ?? new TokenAuthenticator(deps.store);
  const policy = deps.policy ?? new PolicyEnforcer();
  const app = await createServer({ logger: deps.logger, auth, policy, title: 'online-extend compute API', service: 'compute', serviceActsInAnyProject: true, ...(deps.http ? { limits: deps.http } : {}), ...(deps.metrics ? { metrics: deps.metrics, serveMetrics: deps.serveMetrics ?? true } : {}), ...(deps.timingDetail ? { timingDetail: true } : {}) });
  announceKeystone(app, auth);
  const routeDeps = {
    logger: deps.logger,
    auth,
    policy,
    title: '',
    compute,
    ...(deps.volumes ? { volumes: deps.volumes } : {}),
    // Nova's 2.47 flavor dict: the flavor the server was built with, from the store unless a test gives its own.
    lookupFlavor: deps.lookupFlavor ?? ((id: string) => deps.store.getFlavor(id)),
    ...(deps.hostStatusFromServices ? { hostStatusOf: (host: string) => deps.services.hostStatus(host) } : {}),
  };
  registerComputeVersions(app);
  registerOnlineExtendVolume(app, routeDeps);
  registerServers(app, routeDeps);
  registerVolumeConnections(app, routeDeps);
  registerExternalEvents(app, routeDeps);
  registerServerLifecycle(app, { ...routeDeps, servers });
  registerFlavors(app, { ...routeDeps, store: deps.store });
  registerServices(app, { ...routeDeps, services: deps.services });
  return { app, compute, servers, services: deps.services, auth, policy };
}

/**
 * The image API (Glance's reads, routes/image/images.ts) on its own app: the images servers are
 * built from, for clients that look them up in the catalog.
 */
export async function buildImageApp(deps: {
  store: Store;
  logger: Logger;
  auth: Authenticator;
  policy: PolicyEnforcer;
  http?: Partial<HttpLimits>;
  metrics?: Metrics;
  /** Server-Timing's per-layer parts (Config serverTimingDetail; as the compute app's: the store's time with metrics). */
  timingDetail?: boolean;
}): Promise<App> {
  const store = deps.metrics && deps.timingDetail ? timedMethods(deps.store, 'store') : deps.store;
  const app = await createServer({
    logger: deps.logger,
    auth: deps.auth,
    policy: deps.policy,
    title: 'online-extend image API',
    service: 'compute',
    ...(deps.http ? { limits: deps.http } : {}),
    ...(deps.metrics ? { metrics: deps.metrics, metricsApi: 'image' } : {}),
    ...(deps.timingDetail ? { timingDetail: true } : {}),
  });
  registerImageApi(app, { logger: deps.logger, auth: deps.auth, policy: deps.policy, title: '', store });
  return app;
}

/** What the volume API is built from. `compute`: how it reaches compute (HttpComputeClient). */
export interface VolumeAppDeps {
  store: Store;
  logger: Logger;
  policy: PolicyEnforcer;
  backends: ReadonlyMap<string, VolumeBackend>;
  defaultBackend: string;
  compute: ComputeForVolumes;
  workflow?: Partial<WorkflowOptions>;
  /** The workflow worker's name in the extend leases (default: a new unique one; ExtendWorkflow `owner`). */
  workflowOwner?: string;
  /** HTTP timeouts, connection cap and drain grace (Config defaults otherwise). */
  http?: Partial<HttpLimits>;
  /** Operations under way in this process (shared with attach and the reconciler). */
  inFlight?: InFlight;
  /** How callers are authenticated (default: a TokenAuthenticator on `store`). */
  auth?: Authenticator;
  /** The process's metrics: workflow steps, retries, extends, requests, volumes by status (absent: none). */
  metrics?: Metrics;
  /** Server-Timing's per-layer parts (Config serverTimingDetail, on by default; off: auth and total only). */
  timingDetail?: boolean;
}

/** The volume API and the services behind it. */
export interface VolumeApp {
  app: App;
  volumes: VolumeService;
  attachments: VolumeAttachService;
  workflow: ExtendWorkflow;
}

/** The volume API (Cinder's role). Call `workflow.resumeAll()` once the compute API answers. */
export async function buildVolumeApp(deps: VolumeAppDeps): Promise<VolumeApp> {
  const logger = deps.logger.child({ component: 'volume' });
  const metrics = deps.metrics;
  if (metrics) {
    const counted = deps.store;
    metrics.countVolumesWith(() => counted.countVolumesByStatus(), VOLUME_STATUSES);
    if (deps.timingDetail) deps = { ...deps, store: timedMethods(deps.store, 'store') };
  }
  // Every consumer below asks about volumes that have a record: a backend's "not found" is missing storage there.
  deps = { ...deps, backends: storageChecked(deps.backends, deps.store) };
  const workflow = new ExtendWorkflow({
    store: deps.store,
    backends: deps.backends,
    compute: deps.compute,
    logger,
    ...(deps.workflow ? { options: deps.workflow } : {}),
    ...(deps.workflowOwner ? { owner: deps.workflowOwner } : {}),
    ...(metrics ? { metrics } : {}),
  });
  const inFlight = deps.inFlight ?? new InFlight();
  const attachments = new VolumeAttachService({ store: deps.store, backends: deps.backends, compute: deps.compute, inFlight });
  const volumes = new VolumeService({
    store: deps.store,
    backends: deps.backends,
    compute: deps.compute,
    workflow,
    logger,
    defaultBackend: deps.defaultBackend,
    inFlight,
  });
  const auth = deps.auth ?? new TokenAuthenticator(deps.store);
  const app = await createServer({ logger: deps.logger, auth, policy: deps.policy, title: 'online-extend volume API', service: 'volume', ...(deps.http ? { limits: deps.http } : {}), ...(metrics ? { metrics } : {}), ...(deps.timingDetail ? { timingDetail: true } : {}) });
  announceKeystone(app, auth);
  registerVolumeVersions(app);
  registerVolumes(app, { logger: deps.logger, auth, policy: deps.policy, title: '', volumes });
  registerAttachments(app, { logger: deps.logger, auth, policy: deps.policy, title: '', attachments });
  return { app, volumes, attachments, workflow };
}

/**
 * With a Keystone authenticator, every 401 names Keystone in `WWW-Authenticate`, as
 * keystonemiddleware's rejections do (`Keystone uri="<keystoneUrl>"`), so a client knows where to
 * get a token. An onError hook: nothing on the path of successful requests.
 */
function announceKeystone(app: App, auth: ServerDeps['auth']): void {
  if (!(auth instanceof KeystoneAuthenticator)) return;
  const value = auth.wwwAuthenticate;
  app.addHook('onError', (_req, reply, err, done) => {
    if ((err as { status?: unknown }).status === 401 || reply.statusCode === 401) reply.header('www-authenticate', value);
    done();
  });
}

/**
 * The Keystone authenticator `auth=keystone` asks for (undefined for the other modes). Throws
 * ConfigError when keystoneUrl or keystoneServicePasswordFile is missing or the file unreadable.
 */
export function keystoneFrom(config: Config, logger?: Logger): KeystoneAuthenticator | undefined {
  if (config.auth !== 'keystone') return undefined;
  if (!/^https?:\/\/[^/]/.test(config.keystoneUrl ?? '')) {
    throw new ConfigError('keystoneUrl', 'config keystoneUrl: auth keystone needs the Keystone URL, an http:// or https:// URL (--keystone-url http://HOST:5000/v3)');
  }
  if (!config.keystoneServicePasswordFile) {
    throw new ConfigError('keystoneServicePasswordFile', "config keystoneServicePasswordFile: auth keystone needs the file holding the service user's password (--keystone-service-password-file)");
  }
  try {
    return KeystoneAuthenticator.fromConfig(config, logger);
  } catch (err) {
    throw new ConfigError('keystoneServicePasswordFile', `config keystoneServicePasswordFile: ${(err as Error).message}`);
  }
}

/** The HTTP limits the configuration asks for (each API gets the same); per-connection bounds are fixed. */
export function httpLimitsFrom(
  config: Pick<Config, 'httpHeadersTimeoutMs' | 'httpRequestTimeoutMs' | 'httpKeepAliveTimeoutMs' | 'httpMaxConnections' | 'httpSendTimeoutMs' | 'shutdownGraceMs'>,
): HttpLimits {
  return {
    headersTimeoutMs: config.httpHeadersTimeoutMs,
    requestTimeoutMs: config.httpRequestTimeoutMs,
    keepAliveTimeoutMs: config.httpKeepAliveTimeoutMs,
    maxConnections: config.httpMaxConnections,
    shutdownGraceMs: config.shutdownGraceMs,
    sendTimeoutMs: config.httpSendTimeoutMs,
    maxPipelined: DEFAULT_HTTP_LIMITS.maxPipelined,
    maxUnsentBytes: DEFAULT_HTTP_LIMITS.maxUnsentBytes,
  };
}

/** One storage backend per name in `config.backends` (file, block, iscsi), each under `<dataDir>/volumes/<name>`. */
export function createBackends(config: Pick<Config, 'backends' | 'dataDir' | 'iscsiPortal' | 'tgtControlPort'>): Map<string, VolumeBackend> {
  const backends = new Map<string, VolumeBackend>();
  for (const name of config.backends) {
    const dir = join(config.dataDir, 'volumes', name);
    if (name === 'file') backends.set(name, new FileBackend({ dir }));
    else if (name === 'block') backends.set(name, new BlockBackend({ dir }));
    else if (name === 'iscsi') {
      backends.set(name, new IscsiBackend({ dir, portal: config.iscsiPortal, ...(config.tgtControlPort ? { controlPort: config.tgtControlPort } : {}) }));
    }
  }
  return backends;
}

/** What `startService` runs: the APIs' URLs, the driver, and a bounded graceful `close`. */
export interface RunningService {
  /** The virt driver in use (tests reach the fake's fault injection through it). */
  driver: VirtDriver;
  /** Re-read the hypervisor's inventory now (`serve` does it on SIGHUP). */
  syncInventory(): Promise<void>;
  computeUrl: string;
  volumeUrl: string | undefined;
  /** The embedded Keystone's base URL (auth `token` only; its API is under `/v3`). */
  identityUrl: string | undefined;
  /** The image API (Glance's reads). */
  imageUrl: string;
  /** GET /metrics on its own listener (config metricsPort set); undefined: it is served on the compute API's URL. */
  metricsUrl: string | undefined;
  close(): Promise<void>;
}

/**
 * Everything `online-extend serve` runs in one process: the compute API on this host and, unless
 * disabled, the volume API, which reaches compute over HTTP with its own service token.
 */
export async function startService(config: Config): Promise<RunningService> {
  // First of all: take the data dir (one serve per data dir), make it private and check the
  // database; refuse to start otherwise (DataDirError, with what was found and what to do).
  const started = performance.now();
  // auth=keystone's settings are checked (and the password file read) before anything is touched.
  const keystone = keystoneFrom(config);
  const dataDir = openDataDir(config.dataDir, { lock: true, backends: config.backends, allowOrphanVolumes: config.allowOrphanVolumes });
  const checkMs = Math.round(performance.now() - started);
  try {
    return await runService(config, dataDir, checkMs, keystone);
  } catch (err) {
    keystone?.stop();
    await dataDir.close().catch(() => undefined);
    throw err;
  }
}

async function runService(config: Config, dataDir: OpenedDataDir, checkMs: number, keystoneAuth: KeystoneAuthenticator | undefined): Promise<RunningService> {
  const logger = createLogger(config.logLevel);
  // auth=keystone: one authenticator (one cache, one service token) for both APIs. Keystone being
  // away at start does not stop the service: it answers 503 until Keystone is back.
  if (keystoneAuth) {
    keystoneAuth.useLogger(logger.child({ component: 'keystone' }));
    await keystoneAuth.startInBackground();
  }
  const store = dataDir.store;
  if (dataDir.secured.length) logger.warn({ files: dataDir.secured.length }, 'made data dir files private (0600/0700)');
  logDataDirCheck(logger, dataDir, checkMs);
  // One Registry per process (never prom-client's global one).
  const metrics = new Metrics();
  const driver = await createDriver(config, logger, metrics);
  const policy = config.policyFile ? PolicyEnforcer.fromFile(config.policyFile) : new PolicyEnforcer();
  const backends = createBackends(config);
  // Each API finds the other's endpoint here once it listens (see ServiceCatalog).
  const catalog = new ServiceCatalog();
  // One authenticator (one token cache) for both APIs, so a token revoked through the embedded
  // Keystone stops working on both at once.
  const storedTokens = new TokenAuthenticator(store);
  const auth: Authenticator = keystoneAuth ?? (config.auth === 'noauth' ? new NoAuthAuthenticator(storedTokens) : storedTokens);
  if (config.auth === 'noauth') {
    logger.warn({ auth: 'noauth' }, 'noauth: X-Auth-Token USER:PROJECT is trusted as an admin of PROJECT without any check (Cinder noauth; labs only); the embedded Keystone is not started');
  }
  const computeApp = await buildComputeApp({
    store,
    driver,
    logger,
    policy,
    computeHost: config.computeHost,
    defaultProject: config.defaultProject,
    ...(config.volumeApi ? { volumes: new HttpVolumeClient({ url: catalog.endpoint('volume') }) } : {}),
    // A delete resumed at start-up has no caller's token: compute's own short-lived one, a member
    // of the server's project (what volume:detach asks), under its own user so the volume
    // service's token rotation (which revokes its user's other tokens) leaves it alone. Not with
    // Keystone (its tokens are Keystone's to issue): such a delete ends in error, to be repeated.
    ...(config.volumeApi && config.auth !== 'keystone'
      ? { recoveryToken: async (s: ServerRecord) => (await issueToken(store, { userId: COMPUTE_USER, projectId: s.projectId, roles: ['member', 'reader'], ttlMs: 10 * 60_000 })).token }
      : {}),
    http: httpLimitsFrom(config),
    auth,
    serviceDownTimeMs: config.serviceDownTimeMs,
    serviceHeartbeatMs: config.serviceHeartbeatMs,
    metrics,
    serveMetrics: config.metricsPort === undefined,
    timingDetail: config.serverTimingDetail,
  });
  // This host's nova-compute service, as an agent reports it (os-services lists it up).
  await computeApp.heartbeat.start();
  const timer = config.syncIntervalMs > 0
    ? setInterval(() => void computeApp.manager.syncInventory().catch((err: unknown) => logger.warn({ err }, 'inventory sync failed')), config.syncIntervalMs)
    : undefined;
  timer?.unref();
  let volumeApp: VolumeApp | undefined;
  let volumeUrl: string | undefined;
  let serviceToken: ServiceToken | undefined;
  let reconciler: VolumeReconciler | undefined;
  let identityApp: Awaited<ReturnType<typeof buildIdentityApp>> | undefined;
  let identityUrl: string | undefined;
  let computeUrl: string;
  let imageApp: App | undefined;
  let imageUrl: string;
  let metricsListener: MetricsListener | undefined;
  try {
    computeUrl = await computeApp.app.listen({ host: config.host, port: config.port });
    catalog.register('compute', computeUrl);
    logger.info({ url: computeUrl, driver: driver.name, dataDir: config.dataDir }, 'compute API listening');
    imageApp = await buildImageApp({ store, logger, auth: computeApp.auth, policy, http: httpLimitsFrom(config), metrics, timingDetail: config.serverTimingDetail });
    imageUrl = await imageApp.listen({ host: config.host, port: config.imagePort });
    catalog.register('image', imageUrl);
    logger.info({ url: imageUrl }, 'image API listening');

    if (config.volumeApi) {
      let currentToken: () => string;
      let renewToken: (refused: string) => Promise<string | undefined>;
      if (keystoneAuth) {
        // auth=keystone: compute checks tokens with Keystone, so the volume service calls it with
        // a Keystone token of the service user (renewed by the authenticator), as Cinder calls Nova.
        currentToken = () => keystoneAuth.serviceToken();
        const keystone = keystoneAuth;
        renewToken = (refused) => keystone.renewRefusedServiceToken(refused);
      } else {
        serviceToken = await ServiceToken.open({
          store,
          file: join(config.dataDir, SERVICE_TOKEN_FILE),
          onError: (err) => logger.error({ err }, 'service token rotation failed'),
        });
        serviceToken.start();
        const token = serviceToken;
        currentToken = () => token.current();
        renewToken = (refused) => token.renew(refused);
      }
      // Compute's API is served by this process: its calls go through that API in-process (rpc/inProcess.ts).
      const compute = new HttpComputeClient({ url: catalog.endpoint('compute'), token: currentToken, serviceCredential: { renew: renewToken }, dispatch: injectDispatch(computeApp.app, catalog.endpoint('compute')) });
      // Volumes with an operation under way in this process, left alone by the reconciler.
      const inFlight = new InFlight();
      volumeApp = await buildVolumeApp({
        store,
        logger,
        policy,
        backends,
        defaultBackend: config.defaultBackend,
        compute,
        workflow: { timeoutMs: config.extendTimeoutMs, stepDelayMs: config.extendStepDelayMs, watchdogMs: config.extendWatchdogMs, leaseMs: config.extendLeaseMs },
        // The data dir lock makes this process the only workflow worker on its database: a name
        // that stays the same across restarts takes back at once the leases a kill left behind.
        workflowOwner: SERVE_WORKFLOW_OWNER,
        http: httpLimitsFrom(config),
        inFlight,
        metrics,
        timingDetail: config.serverTimingDetail,
        auth,
      });
      volumeUrl = await volumeApp.app.listen({ host: config.volumeHost, port: config.volumePort });
      catalog.register('volume', volumeUrl);
      logger.info({ url: volumeUrl, backends: [...backends.keys()] }, 'volume API listening');
      const resumed = await volumeApp.workflow.resumeAll();
      if (resumed.length) logger.info({ volumes: resumed }, 'resumed unfinished extends');
      reconciler = new VolumeReconciler({
        store,
        backends,
        compute,
        inFlight,
        logger: logger.child({ component: 'volume-reconciler' }),
        options: { intervalMs: config.volumeReconcileMs, graceMs: config.volumeReconcileMs },
      });
      await reconciler.start();
    }

    if (config.auth === 'token') {
      // The embedded Keystone v3: tokens from passwords (`user create`), with a catalog of the
      // URLs the APIs above actually listen on.
      const identity = new IdentityService({
        store,
        users: new SqliteUserStore(store.db),
        endpoints: catalog,
        tokenTtlMs: config.identityTokenTtlMs,
        onRevoke: (token) => auth.forget?.(token),
      });
      identityApp = await buildIdentityApp({ identity, logger, baseUrl: catalog.endpoint('identity'), limits: httpLimitsFrom(config), metrics });
      identityUrl = await identityApp.listen({ host: config.host, port: config.identityPort });
      catalog.register('identity', identityUrl);
      logger.info({ url: identityUrl }, 'identity API (Keystone v3) listening');
    }
    if (config.metricsPort !== undefined) {
      metricsListener = await listenMetrics(metrics, config.metricsHost, config.metricsPort, logger);
      logger.info({ url: metricsListener.url }, 'metrics listening');
    }
  } catch (err) {
    // A part failed to start (a port taken, the token, the reconciler): stop what did start, so
    // the process exits with the error instead of running half a service (the data dir is
    // released by startService).
    if (timer) clearInterval(timer);
    computeApp.heartbeat.stop();
    await identityApp?.close().catch(() => undefined);
    await reconciler?.close().catch(() => undefined);
    await volumeApp?.workflow.close().catch(() => undefined);
    await volumeApp?.app.close().catch(() => undefined);
    await imageApp?.close().catch(() => undefined);
    await computeApp.app.close().catch(() => undefined);
    await computeApp.manager.close().catch(() => undefined);
    await metricsListener?.close().catch(() => undefined);
    serviceToken?.stop();
    keystoneAuth?.stop();
    throw err;
  }
  return {
    driver,
    syncInventory: () => computeApp.manager.syncInventory(),
    computeUrl,
    volumeUrl,
    identityUrl,
    imageUrl,
    metricsUrl: metricsListener?.url,
    /**
     * Bounded graceful shutdown: one deadline (`shutdownGraceMs` from now) for everything. The
     * volume API drains first, while compute still answers the calls its requests make; the
     * workflow stops at the deadline at the latest (its steps are stored, so an interrupted
     * step resumes at the next start); then compute drains.
     */
    close: async () => {
      if (timer) clearInterval(timer);
      computeApp.heartbeat.stop();
      const deadline = Date.now() + config.shutdownGraceMs;
      const untilDeadline = () => new Promise<void>((r) => setTimeout(r, Math.max(0, deadline - Date.now())).unref());
      // No new tokens while the APIs drain.
      if (identityApp) await Promise.race([identityApp.close(), untilDeadline()]);
      if (volumeApp) {
        await Promise.all([
          drainServer(volumeApp.app, deadline),
          Promise.race([Promise.all([volumeApp.workflow.close(), reconciler?.close()]), untilDeadline()]),
        ]);
        await volumeApp.app.close();
      }
      const images = imageApp;
      await Promise.all([drainServer(computeApp.app, deadline), drainServer(images, deadline)]);
      await images.close();
      // Builds and deletes under way finish (bounded by the same deadline) before the driver closes.
      await Promise.race([computeApp.servers.idle(), untilDeadline()]);
      await computeApp.app.close();
      await computeApp.manager.close();
      await metricsListener?.close();
      serviceToken?.stop();
      keystoneAuth?.stop();
      await dataDir.close();
    },
  };
}

/** What `startApiService` runs on: the compute hosts (`rpc`), and optionally a store already open. */
export interface ApiServiceDeps {
  /**
   * The compute hosts: AmqpComputeRpc in a deployment (openComputeRpc), a LocalComputeRpc or
   * several (by host) in tests. Each call is checked against the host's service first
   * (HostCheckedRpc: a host whose agent is down fails at once with 503).
   */
  rpc: ComputeRpc;
  /** The store to use instead of opening `config.databaseUrl` (tests sharing one with in-process hosts); not closed by `close`. */
  store?: OpenedStore;
  logger?: Logger;
}

/** What `startApiService` runs: the APIs' URLs and a bounded graceful `close`. */
export interface RunningApiService {
  computeUrl: string;
  volumeUrl: string | undefined;
  identityUrl: string | undefined;
  imageUrl: string;
  /** GET /metrics on its own listener (config metricsPort set); undefined: it is served on the compute API's URL. */
  metricsUrl: string | undefined;
  /** This process's instance id (its volume service's token user is serviceUserOf(instanceId)). */
  instanceId: string;
  close(): Promise<void>;
}

/**
 * `online-extend api`: the compute API (no driver: every host call goes through `deps.rpc`),
 * the volume API with its extend workflow and reconciler, the embedded Keystone (auth `token`)
 * and the image API, with every piece of state in the database `config.databaseUrl` names.
 * Stateless: any number of these run on one database. No data-dir lock and no database file in
 * the data dir; the data dir holds only the volume backends' files (`volumes/<backend>/`), which
 * may be a path shared by every api process. The volume service's token for the compute API is
 * this process's own (kept in the store only, under serviceUserOf(instance)), so processes never
 * revoke each other's. New servers go to the host ComputeServices.chooseHost picks. Throws
 * ConfigError without `databaseUrl`.
 */
export async function startApiService(config: Config, deps: ApiServiceDeps): Promise<RunningApiService> {
  if (!deps.store && !config.databaseUrl) {
    throw new ConfigError('databaseUrl', 'config databaseUrl: the api role keeps its state in a shared database: give --database-url postgresql://… (or sqlite:///PATH on one host)');
  }
  const keystoneAuth = keystoneFrom(config);
  const logger = deps.logger ?? createLogger(config.logLevel);
  const opened = deps.store ?? (await openStoreUrl(config.databaseUrl!));
  const closeStore = deps.store ? () => Promise.resolve() : () => opened.close();
  const store = opened.store;
  const instanceId = randomUUID().slice(0, 8);
  let computeApi: ComputeApi | undefined;
  let volumeApp: VolumeApp | undefined;
  let serviceToken: ServiceToken | undefined;
  let reconciler: VolumeReconciler | undefined;
  let identityApp: Awaited<ReturnType<typeof buildIdentityApp>> | undefined;
  let imageApp: App | undefined;
  let metricsListener: MetricsListener | undefined;
  const metrics = new Metrics();
  try {
    if (keystoneAuth) {
      keystoneAuth.useLogger(logger.child({ component: 'keystone' }));
      await keystoneAuth.startInBackground();
    }
    for (const b of config.backends) mkdirSync(join(config.dataDir, VOLUMES_DIR, b), { recursive: true, mode: DIR_MODE });
    const policy = config.policyFile ? PolicyEnforcer.fromFile(config.policyFile) : new PolicyEnforcer();
    const backends = createBackends(config);
    const catalog = new ServiceCatalog();
    const storedTokens = new TokenAuthenticator(store);
    const auth: Authenticator = keystoneAuth ?? (config.auth === 'noauth' ? new NoAuthAuthenticator(storedTokens) : storedTokens);
    // Its store time (os-services, each RPC's host check) in Server-Timing, as buildComputeApi's.
    const services = new ComputeServices({ store: config.serverTimingDetail ? timedMethods(store, 'store') : store, downTimeMs: config.serviceDownTimeMs });
    const api = await buildComputeApi({
      store,
      rpc: new HostCheckedRpc(deps.rpc, services),
      services,
      chooseHost: (exclude) => services.chooseHost(exclude),
      hostStatusFromServices: true,
      logger,
      policy,
      ...(config.volumeApi ? { volumes: new HttpVolumeClient({ url: catalog.endpoint('volume') }) } : {}),
      http: httpLimitsFrom(config),
      auth,
      metrics,
      serveMetrics: config.metricsPort === undefined,
      timingDetail: config.serverTimingDetail,
    });
    computeApi = api;
    const computeUrl = await api.app.listen({ host: config.host, port: config.port });
    catalog.register('compute', computeUrl);
    logger.info({ url: computeUrl, instance: instanceId }, 'compute API listening (api role)');
    imageApp = await buildImageApp({ store, logger, auth, policy, http: httpLimitsFrom(config), metrics, timingDetail: config.serverTimingDetail });
    const imageUrl = await imageApp.listen({ host: config.host, port: config.imagePort });
    catalog.register('image', imageUrl);

    let volumeUrl: string | undefined;
    if (config.volumeApi) {
      let currentToken: () => string;
      let renewToken: (refused: string) => Promise<string | undefined>;
      if (keystoneAuth) {
        currentToken = () => keystoneAuth.serviceToken();
        const keystone = keystoneAuth;
        renewToken = (refused) => keystone.renewRefusedServiceToken(refused);
      } else {
        // Per process, in the store only: a shared data dir holds no token file, and one process's
        // rotation never revokes another's token. A dead process's token expires within the hour.
        serviceToken = await ServiceToken.open({
          store,
          userId: serviceUserOf(instanceId),
          ttlMs: API_SERVICE_TOKEN_TTL_MS,
          onError: (err) => logger.error({ err }, 'service token rotation failed'),
        });
        serviceToken.start();
        const token = serviceToken;
        currentToken = () => token.current();
        renewToken = (refused) => token.renew(refused);
      }
      // Compute's API is served by this process: its calls go through that API in-process (rpc/inProcess.ts).
      const compute = new HttpComputeClient({ url: catalog.endpoint('compute'), token: currentToken, serviceCredential: { renew: renewToken }, dispatch: injectDispatch(api.app, catalog.endpoint('compute')) });
      // Several api processes share the database: an operation under way here keeps its record
      // fresh, so the other processes' reconcilers (which wait volumeReconcileMs after a record's
      // last change) leave it alone.
      const inFlight = new InFlight({ store, everyMs: Math.max(1, Math.floor(config.volumeReconcileMs / 2)), logger: logger.child({ component: 'in-flight' }) });
      volumeApp = await buildVolumeApp({
        store,
        logger,
        policy,
        backends,
        defaultBackend: config.defaultBackend,
        compute,
        // No workflowOwner: each process is its own worker (a unique default name), so a dead
        // one's extends are taken over once their lease (extendLeaseMs) ends.
        workflow: { timeoutMs: config.extendTimeoutMs, stepDelayMs: config.extendStepDelayMs, watchdogMs: config.extendWatchdogMs, leaseMs: config.extendLeaseMs },
        http: httpLimitsFrom(config),
        inFlight,
        auth,
        metrics,
        timingDetail: config.serverTimingDetail,
      });
      volumeUrl = await volumeApp.app.listen({ host: config.volumeHost, port: config.volumePort });
      catalog.register('volume', volumeUrl);
      logger.info({ url: volumeUrl, backends: [...backends.keys()] }, 'volume API listening');
      // With several api processes, which of them drives an unfinished extend is the workflow's
      // lease (VolumeStore.claimExtend), not this call.
      const resumed = await volumeApp.workflow.resumeAll();
      if (resumed.length) logger.info({ volumes: resumed }, 'resumed unfinished extends');
      reconciler = new VolumeReconciler({
        store,
        backends,
        compute,
        inFlight,
        logger: logger.child({ component: 'volume-reconciler' }),
        options: { intervalMs: config.volumeReconcileMs, graceMs: config.volumeReconcileMs },
      });
      await reconciler.start();
    }

    let identityUrl: string | undefined;
    if (config.auth === 'token') {
      const identity = new IdentityService({ store, users: opened.users, endpoints: catalog, tokenTtlMs: config.identityTokenTtlMs, onRevoke: (token) => auth.forget?.(token) });
      identityApp = await buildIdentityApp({ identity, logger, baseUrl: catalog.endpoint('identity'), limits: httpLimitsFrom(config), metrics });
      identityUrl = await identityApp.listen({ host: config.host, port: config.identityPort });
      catalog.register('identity', identityUrl);
    }
    if (config.metricsPort !== undefined) {
      metricsListener = await listenMetrics(metrics, config.metricsHost, config.metricsPort, logger);
      logger.info({ url: metricsListener.url }, 'metrics listening');
    }
    const running = { api, imageApp, volumeApp, reconciler, identityApp, serviceToken, metricsListener };
    return {
      computeUrl,
      volumeUrl,
      identityUrl,
      imageUrl,
      metricsUrl: metricsListener?.url,
      instanceId,
      /** As serve's close: one deadline; the volume API drains first, then compute and images; then the store closes. */
      close: async () => {
        const deadline = Date.now() + config.shutdownGraceMs;
        const untilDeadline = () => new Promise<void>((r) => setTimeout(r, Math.max(0, deadline - Date.now())).unref());
        if (running.identityApp) await Promise.race([running.identityApp.close(), untilDeadline()]);
        if (running.volumeApp) {
          const v = running.volumeApp;
          await Promise.all([drainServer(v.app, deadline), Promise.race([Promise.all([v.workflow.close(), running.reconciler?.close()]), untilDeadline()])]);
          await v.app.close();
        }
        await Promise.all([drainServer(running.api.app, deadline), drainServer(running.imageApp, deadline)]);
        await running.imageApp.close();
        await Promise.race([running.api.servers.idle(), untilDeadline()]);
        await running.api.app.close();
        await running.metricsListener?.close();
        running.serviceToken?.stop();
        keystoneAuth?.stop();
        await closeStore();
      },
    };
  } catch (err) {
    await identityApp?.close().catch(() => undefined);
    await reconciler?.close().catch(() => undefined);
    await volumeApp?.workflow.close().catch(() => undefined);
    await volumeApp?.app.close().catch(() => undefined);
    await imageApp?.close().catch(() => undefined);
    await computeApi?.app.close().catch(() => undefined);
    await metricsListener?.close().catch(() => undefined);
    serviceToken?.stop();
    keystoneAuth?.stop();
    await closeStore().catch(() => undefined);
    throw err;
  }
}

/** Lifetime of an `api` process's volume-service token (renewed at half): short, since a dead process's token is left to expire. */
const API_SERVICE_TOKEN_TTL_MS = 3_600_000;

/**
 * The compute RPC a deployment's `api` process uses: AmqpComputeRpc (src/rpc/amqp/client.ts)
 * over one connection to `config.transportUrl` (src/rpc/amqp/connection.ts), each call with the
 * deadline `rpcTimeoutMs`. Resolves while the broker is away (calls then fail at once with
 * MessagingUnavailable, and work again once it is back). Throws ConfigError without `transportUrl`.
 */
export async function openComputeRpc(config: Config, logger: Logger): Promise<{ rpc: ComputeRpc; close(): Promise<void> }> {
  if (!config.transportUrl) {
    throw new ConfigError('transportUrl', 'config transportUrl: the api role reaches the compute agents over the message broker: give --transport-url rabbit://USER:PASSWORD@HOST:PORT/VHOST');
  }
  // Loaded only by the api role: serve never loads the broker client.
  const { AmqpConnection } = await import('./rpc/amqp/connection.js');
  const { AmqpComputeRpc } = await import('./rpc/amqp/client.js');
  const connection = await AmqpConnection.open(config.transportUrl, { logger: logger.child({ component: 'amqp' }), name: 'online-extend api' });
  const rpc = new AmqpComputeRpc({ connection, timeoutMs: config.rpcTimeoutMs, logger: logger.child({ component: 'compute-rpc' }) });
  return {
    rpc,
    close: async () => {
      await rpc.close();
      await connection.close();
    },
  };
}

/** What the start-up checks of the data dir found (openDataDir), for the operator. */
function logDataDirCheck(logger: Logger, dataDir: OpenedDataDir, checkMs: number): void {
  const v = dataDir.volumes;
  logger.info(
    { dataDir: dataDir.dir, databaseId: dataDir.databaseId, volumes: v?.volumes, volumeFiles: v?.files, orphanVolumeFiles: v?.orphans.length, ms: checkMs },
    'data dir checked',
  );
  if (dataDir.adopted) logger.info({ databaseId: dataDir.databaseId }, 'data dir marker now records the database identity');
  if (v && v.orphans.length > 0) {
    // Only reached with --allow-orphan-volumes: loud, every time, until the operator deals with them.
    logger.error(
      { count: v.orphans.length, volumeIds: v.orphans.slice(0, 1000).map((f) => f.volumeId), files: v.orphans.slice(0, 1000).map((f) => `${f.backend}/${f.name}`) },
      'volume files belong to no volume in the database: started anyway (--allow-orphan-volumes); they are left in place and served by nothing',
    );
  }
  if (v && v.withoutFile.length > 0) {
    logger.warn({ count: v.withoutFile.length, volumeIds: v.withoutFile.slice(0, 100) }, 'volumes in the database have no file under the data dir');
  }
}

/** The service's pino logger at `level` (structured JSON lines). */
export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'online-extend' } });
}

/** The SQLite store of `<dataDir>/online-extend.sqlite`. */
export function openStore(config: Pick<Config, 'dataDir'>): Store {
  return new SqliteStore(join(config.dataDir, 'online-extend.sqlite'));
}

/** The virt driver `config.driver` names: the fake (its inventory file) or libvirt (loaded on demand). */
export async function createDriver(config: Config, logger: Logger, metrics?: Metrics): Promise<VirtDriver> {
  if (config.driver === 'fake') {
    return FakeDriver.fromInventoryFile(config.fakeInventory!, {
      statePath: join(config.dataDir, 'fake-hypervisor.json'),
      ...(config.fakeLatencyMs > 0 ? { latencyMs: config.fakeLatencyMs } : {}),
      readLunBytes: (lun) => readCapacity(lun.portal ?? config.iscsiPortal, lun.iqn, lun.lun), // iSCSI disks: the LUN's size as the iSCSI backend reads it
    });
  }
  const { LibvirtDriver } = await import('./virt/libvirt/driver.js');
  return new LibvirtDriver({
    uri: config.libvirtUri,
    defaultProjectId: config.defaultProject,
    logger: logger.child({ component: 'libvirt' }),
    instancesDir: join(config.dataDir, INSTANCES_DIR),
    virtType: config.virtType,
    ...(metrics ? { observeCall: (procedure: string, seconds: number) => metrics.libvirtSeconds.observe({ procedure }, seconds) } : {}),
  });
}
