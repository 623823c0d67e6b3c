/**
 * Compute services (Nova's `services` table and servicegroup API): which hosts are up, which take
 * new servers, and calls to a host that fail fast when its agent is gone.
 *
 * - A host's `nova-compute` service is up when its last heartbeat is at most `downTimeMs` old
 *   (Nova's `service_down_time`); a host with no row at all has never reported and is down.
 * - `HostCheckedRpc` wraps a ComputeRpc: before a call to a host it asks `ComputeServices` whether
 *   the host is up and throws ComputeHostUnavailable (503, uncertain) at once otherwise, instead
 *   of waiting for the RPC deadline. A disabled service still takes calls for its servers (as
 *   Nova's: disabling only stops scheduling).
 * - `chooseHost` picks where a new server is built: among services up and enabled, the one with
 *   the fewest servers, ties by host name (a placeholder for Nova's scheduler).
 * - `ServiceHeartbeat` writes one host's heartbeat on a timer (serve does it in-process).
 *
 * The services list is read from the store at most once per `cacheMs` (default 1 s), so a hot
 * path such as get_blockdev does not read the table on every call.
 */
import type { Logger } from 'pino';
import type { ComputeStore, ServerRecord, ServiceRecord } from '../db/store.js';
import { errors } from '../errors.js';
import type { AttachSpec, SpawnSpec } from '../virt/driver.js';
import type { ComputeRpc } from './rpc.js';
import { currentTimings, withTimings } from '../util/timing.js';

/** The binary name of a compute host's service, as Nova's (what os-services filters on). */
export const NOVA_COMPUTE = 'nova-compute';
/** The RPC topic compute services listen on (`compute.<host>`). */
export const COMPUTE_TOPIC = 'compute';

/** Nova's HostStatus values this service gives (DOWN is for forced-down services, which are not implemented). */
export type HostStatus = 'UP' | 'UNKNOWN' | 'MAINTENANCE';

/** A service as the API shows it: the stored row and whether it is up now. */
export interface ServiceState extends ServiceRecord {
  up: boolean;
}

/** Whether `service`'s last heartbeat is at most `downTimeMs` before `nowMs` (Nova's servicegroup DB driver's is_up). */
export function serviceIsUp(service: Pick<ServiceRecord, 'updatedAt'>, nowMs: number, downTimeMs: number): boolean {
  const at = Date.parse(service.updatedAt);
  return Number.isFinite(at) && nowMs - at <= downTimeMs;
}

/** What ComputeServices reads and writes, and its bounds (ms). */
export interface ComputeServicesOptions {
  store: Pick<ComputeStore, 'listServices' | 'setServiceDisabled' | 'listServers'>;
  /** A service whose heartbeat is older than this is down (Config.serviceDownTimeMs). */
  downTimeMs: number;
  /** How long one read of the services table is used for host checks (default 1000). */
  cacheMs?: number;
  /** The clock (tests move it). */
  now?: () => number;
}

/** See the module comment. */
export class ComputeServices {
  readonly downTimeMs: number;
  private readonly store: ComputeServicesOptions['store'];
  private readonly cacheMs: number;
  private readonly now: () => number;
  private cached: { at: number; byHost: Map<string, ServiceRecord> } | undefined;
  private reading: Promise<Map<string, ServiceRecord>> | undefined;

  constructor(opts: ComputeServicesOptions) {
    this.store = opts.store;
    this.downTimeMs = opts.downTimeMs;
    this.cacheMs = opts.cacheMs ?? 1000;
    this.now = opts.now ?? Date.now;
  }

  /** The services (optionally of one host and/or binary), by id, each with whether it is up now. Read from the store, not the cache. */
  async list(filter: { host?: string; binary?: string } = {}): Promise<ServiceState[]> {
    const now = this.now();
    return (await this.store.listServices(filter)).map((s) => ({ ...s, up: serviceIsUp(s, now, this.downTimeMs) }));
  }

  /**
   * Resolves when `host`'s compute service is up; throws ComputeHostUnavailable (503, uncertain)
   * when it is down or has never reported. Reads the cached services list.
   */
  async checkHost(host: string): Promise<void> {
    const service = (await this.byHost()).get(host);
    if (!service) throw errors.computeHostUnavailable(host, 'it has no compute service');
    if (!serviceIsUp(service, this.now(), this.downTimeMs)) throw errors.computeHostUnavailable(host, 'its compute service is down');
  }

  /**
   * The host a new server is built on: among compute services up and enabled, the one with the
   * fewest servers, ties by host name. Reads every server record (a scheduler's host state is
   * out of scope). Throws ServiceUnavailable (503, uncertain) when no host qualifies, as Nova's
   * NoValidHost.
   */
  async chooseHost(exclude: ReadonlySet<string> = new Set()): Promise<string> {
    const now = this.now();
    const candidates = (await this.store.listServices({ binary: NOVA_COMPUTE }))
      .filter((s) => !s.disabled && serviceIsUp(s, now, this.downTimeMs) && !exclude.has(s.host))
      .map((s) => s.host);
    if (candidates.length === 0) throw errors.serviceUnavailable('No valid host was found. There are not enough hosts available.');
    const count = new Map(candidates.map((h) => [h, 0]));
    for (const s of await this.store.listServers()) if (count.has(s.host)) count.set(s.host, count.get(s.host)! + 1);
    return [...count].sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))[0]![0];
  }

  /**
   * Nova's `host_status` of a server on `host` (2.16): `MAINTENANCE` when its compute service is
   * disabled, `UP` when it is up, `UNKNOWN` when its heartbeat is stale or it never reported (as
   * Nova's get_instance_host_status). Reads the cached services list.
   */
  async hostStatus(host: string): Promise<HostStatus> {
    const service = (await this.byHost()).get(host);
    if (!service) return 'UNKNOWN';
    if (service.disabled) return 'MAINTENANCE';
    return serviceIsUp(service, this.now(), this.downTimeMs) ? 'UP' : 'UNKNOWN';
  }

  /** Disable or enable `host`'s `binary` (os-services disable/enable); false if there is no such service. Host checks see it at once. */
  async setDisabled(host: string, binary: string, disabled: boolean, reason: string | null): Promise<boolean> {
    this.cached = undefined;
    return this.store.setServiceDisabled(host, binary, disabled, reason);
  }

  /** The compute services by host, read at most once per `cacheMs` (concurrent readers share one read). */
  private async byHost(): Promise<Map<string, ServiceRecord>> {
    const c = this.cached;
    if (c && this.now() - c.at < this.cacheMs) return c.byHost;
    if (!this.reading) {
      const at = this.now();
      this.reading = this.store
        .listServices({ binary: NOVA_COMPUTE })
        .then((rows) => {
          const byHost = new Map(rows.map((s) => [s.host, s]));
          this.cached = { at, byHost };
          return byHost;
        })
        .finally(() => (this.reading = undefined));
    }
    return this.reading;
  }
}

/**
 * ComputeRpc that checks the target host is up (ComputeServices.checkHost) before each call to a
 * named host and passes the call on to `inner`; calls that name no host (syncInventory of every
 * host, syncServer of a server no host is known for) go straight through.
 */
export class HostCheckedRpc implements ComputeRpc {
  constructor(
    private readonly inner: ComputeRpc,
    private readonly services: Pick<ComputeServices, 'checkHost'>,
  ) {}

  private async on<T>(host: string, call: () => Promise<T>): Promise<T> {
    // The caller's request timings, current now but not after the check's await (util/timing.ts).
    const timings = currentTimings();
    await this.services.checkHost(host);
    return withTimings(timings, call);
  }

  capabilities(host: string) {
    return this.on(host, () => this.inner.capabilities(host));
  }
  syncInventory(host?: string): Promise<void> {
    return host === undefined ? this.inner.syncInventory() : this.on(host, () => this.inner.syncInventory(host));
  }
  syncServer(host: string | undefined, serverId: string): Promise<ServerRecord | undefined> {
    return host === undefined ? this.inner.syncServer(undefined, serverId) : this.on(host, () => this.inner.syncServer(host, serverId));
  }
  rescan(host: string, serverId: string, volumeId: string) {
    return this.on(host, () => this.inner.rescan(host, serverId, volumeId));
  }
  getHostBytes(host: string, serverId: string, volumeId: string) {
    return this.on(host, () => this.inner.getHostBytes(host, serverId, volumeId));
  }
  extendAttached(host: string, serverId: string, volumeId: string, bytes: number) {
    return this.on(host, () => this.inner.extendAttached(host, serverId, volumeId, bytes));
  }
  extendToHostSize(host: string, serverId: string, volumeId: string) {
    return this.on(host, () => this.inner.extendToHostSize(host, serverId, volumeId));
  }
  attachVolume(host: string, serverId: string, spec: AttachSpec) {
    return this.on(host, () => this.inner.attachVolume(host, serverId, spec));
  }
  detachVolume(host: string, serverId: string, volumeId: string) {
    return this.on(host, () => this.inner.detachVolume(host, serverId, volumeId));
  }
  spawn(host: string, spec: SpawnSpec) {
    return this.on(host, () => this.inner.spawn(host, spec));
  }
  destroy(host: string, serverId: string) {
    return this.on(host, () => this.inner.destroy(host, serverId));
  }
  growGuestFilesystem(host: string, serverId: string, volumeId: string) {
    return this.on(host, () => this.inner.growGuestFilesystem(host, serverId, volumeId));
  }
}

/** What ServiceHeartbeat writes and how often (ms). */
export interface ServiceHeartbeatOptions {
  store: Pick<ComputeStore, 'serviceHeartbeat'>;
  host: string;
  /** Config.serviceHeartbeatMs (Nova's report_interval). */
  intervalMs: number;
  logger: Logger;
  binary?: string;
}

/** Writes `host`'s service heartbeat every `intervalMs` (see the module comment). A failed write is logged; the next one tries again. */
export class ServiceHeartbeat {
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: ServiceHeartbeatOptions) {}

  /** One heartbeat now; throws what the store throws. */
  async beat(): Promise<ServiceRecord> {
    return this.opts.store.serviceHeartbeat(this.opts.host, this.opts.binary ?? NOVA_COMPUTE, COMPUTE_TOPIC);
  }

  /** A heartbeat now (awaited: the service is listed before the API answers), then every interval; the timer does not keep the process alive. */
  async start(): Promise<void> {
    await this.beat();
    this.timer = setInterval(() => {
      this.beat().catch((err: unknown) => this.opts.logger.warn({ err, host: this.opts.host }, 'service heartbeat failed'));
    }, this.opts.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
