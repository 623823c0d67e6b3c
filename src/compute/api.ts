/**
 * ComputeAPI (Nova's compute/api.py): everything the HTTP layer may ask of compute. It finds
 * the instance and the attachment, checks the instance state and the host's capabilities,
 * records each call that changes something as an instance action (as Nova records mutating
 * actions, never reads), and reaches the host only through ComputeRpc.
 */
import type { Logger } from 'pino';
import type { ActionResult, AttachmentRecord, ComputeStore, InstanceActionRecord, PageQuery, ServerRecord } from '../db/store.js';
import { errors, isServiceError } from '../errors.js';
import type { RequestContext } from '../context.js';
import { currentTimings, withTimings, type RequestTimings } from '../util/timing.js';
import type { AttachSpec, GuestFilesystemGrowth } from '../virt/driver.js';
import type { ComputeRpc } from './rpc.js';
import { clearStaleTasks, DELETING, VOLUME_TASK_STATES, VOLUME_TASKS, withTask, type VolumeTask } from './tasks.js';
import { ServerExternalEvents, type ExternalEvent, type ExternalEventAnswer } from './externalEvents.js';

/** Nova's instance action and event names for each call that changes something. */
export const ACTIONS = {
  rescan: { action: 'rescan_volume', event: 'compute_rescan_volume' },
  assistExtend: { action: 'extend_volume', event: 'compute_extend_volume' },
  attach: { action: 'attach_volume', event: 'compute_attach_volume' },
  detach: { action: 'detach_volume', event: 'compute_detach_volume' },
  /** The extend's grow_fs step: an event of Nova's extend_volume action, named for what it does. */
  growGuestFilesystem: { action: 'extend_volume', event: 'compute_grow_guest_filesystem' },
} as const;
type ActionName = (typeof ACTIONS)[keyof typeof ACTIONS];


const RESIZABLE_STATES = new Set(['active', 'paused']);
/** Task states a volume may be unplugged in: its own detach, and the delete of its server. */
const DETACH_ALLOWED_TASKS: ReadonlySet<string> = new Set([VOLUME_TASKS.detach, DELETING]);
const RESCANNABLE_STATES = new Set(['active', 'paused', 'shutoff', 'suspended']);
/**
 * How long a host's answer to ComputeRpc.capabilities is used (ms). A driver's capabilities are
 * fixed for its process's life; every volume call checks them first, so get_blockdev, the volume
 * service's poll, would otherwise make two calls to the host instead of one.
 */
const CAPABILITIES_TTL_MS = 1000;

type HostCapabilities = Awaited<ReturnType<ComputeRpc['capabilities']>>;

/** What ComputeAPI is built from, and the bounds of looking up unknown servers on a miss. */
export interface ComputeAPIOptions {
  store: ComputeStore;
  rpc: ComputeRpc;
  logger: Logger;
  /**
   * A request naming a server the store does not know makes compute look that one server up on
   * its host (ComputeRpc.syncServer): the same id at most once per this interval (default
   * 1000 ms) ...
   */
  syncOnMissIntervalMs?: number;
  /**
   * ... and at most this many lookups of different ids per interval over the whole API (default
   * 100), so a stream of made-up ids cannot keep the hypervisor busy. Past either bound a miss
   * is a 404 at once; the periodic inventory sync still finds what was missed.
   */
  lookupsOnMissPerInterval?: number;
}

/** See the module comment. */
export class ComputeAPI {
  private readonly store: ComputeStore;
  private readonly rpc: ComputeRpc;
  private readonly log: Logger;
  private readonly syncOnMissIntervalMs: number;
  private readonly lookupsOnMissPerInterval: number;
  /** Lookups on a miss under way, by server id: the misses of one id share one. */
  private readonly missLookups = new Map<string, Promise<ServerRecord | undefined>>();
  /**
   * When each id was last looked up on a miss, oldest first; only ids of the current interval
   * are kept, so it holds at most `lookupsOnMissPerInterval` entries.
   */
  private readonly missedAt = new Map<string, number>();
  /** os-server-external-events (externalEvents.ts). */
  private readonly events: ServerExternalEvents;
  /** Each host's capabilities and when they were asked (hostCapabilities). */
  private readonly capabilitiesByHost = new Map<string, { at: number; answer: HostCapabilities }>();

  constructor(opts: ComputeAPIOptions) {
    this.store = opts.store;
    this.rpc = opts.rpc;
    this.log = opts.logger;
    this.syncOnMissIntervalMs = opts.syncOnMissIntervalMs ?? 1000;
    this.lookupsOnMissPerInterval = opts.lookupsOnMissPerInterval ?? 100;
    this.events = new ServerExternalEvents({
      store: this.store,
      rpc: this.rpc,
      log: this.log,
      // Events name servers of any project (the caller is a service or an admin), as Nova looks them up.
      findServer: async (id) => {
        // The caller's request timings, for the lookup on a miss after the store's await (util/timing.ts).
        const timings = currentTimings();
        return (await this.store.getServer(id)) ?? (await withTimings(timings, () => this.lookUpOnMiss(id)));
      },
    });
  }

  /**
   * POST os-server-external-events: each event answered (ServerExternalEvents.accept: 200, or
   * failed 404 unknown server / 400 no tag / 422 no host); an accepted `volume-extended` records
   * an `extend_volume` action in the caller's name and grows the guest to what the host sees
   * afterwards. Throws only what the store throws when recording the action.
   */
  externalInstanceEvents(ctx: RequestContext, events: readonly ExternalEvent[]): Promise<ExternalEventAnswer[]> {
    return this.events.accept(ctx, events);
  }

  /** At start-up: run again the `volume-extended` actions an earlier process left unfinished on `host` (ServerExternalEvents.resume). */
  resumeExternalEvents(host: string): Promise<string[]> {
    return this.events.resume(host);
  }

  /** Resolves once no external event's work is under way (tests; a shutdown that wants to wait). */
  externalEventsSettled(): Promise<void> {
    return this.events.settled();
  }

  /**
   * The server if it exists and belongs to `tenantId`; InstanceNotFound (404) otherwise (never
   * reveal other projects' servers).
   *
   * The store's inventory is the answer. A domain created on the host since the last sync is
   * found by looking that one server up on the host (ComputeRpc.syncServer: one driver lookup
   * and, if found, one server written to the store; never a listing of the whole host), which
   * the request waits for. Bounded: misses of one id share one lookup and look it up at most
   * once per `syncOnMissIntervalMs`, and the API looks up at most `lookupsOnMissPerInterval`
   * ids per interval; a miss past either bound is a 404 at once, and the next periodic sync
   * picks the server up. A failed lookup is logged and answered 404.
   */
  async getServer(tenantId: string, serverId: string): Promise<ServerRecord> {
    // The caller's request timings, for the lookup on a miss after the store's await (util/timing.ts).
    const timings = currentTimings();
    const server = (await this.store.getServer(serverId)) ?? (await withTimings(timings, () => this.lookUpOnMiss(serverId)));
    if (!server || server.projectId !== tenantId) throw errors.instanceNotFound(serverId);
    return server;
  }

  /**
   * `getServer`, answered without a promise when the store has the server in memory
   * (Store.cachedServer: the read hot path): the server, or InstanceNotFound (404) thrown;
   * otherwise getServer's promise.
   */
  getServerNow(tenantId: string, serverId: string): ServerRecord | Promise<ServerRecord> {
    const known = this.store.cachedServer?.(serverId);
    if (known === undefined) return this.getServer(tenantId, serverId);
    if (known.projectId !== tenantId) throw errors.instanceNotFound(serverId);
    return known;
  }

  /**
   * The server by id as a caller of `projectId` may see it (Nova's `compute_api.get`, whose
   * lookup is limited to the caller's project unless the caller is an admin): any project's
   * server when `anyProject`, else only `projectId`'s. InstanceNotFound (404) otherwise. Misses
   * are looked up on the host as `getServer` does. The caller then checks its policy on the
   * server's owner (`server.projectId`).
   */
  async findServer(serverId: string, projectId: string, anyProject: boolean): Promise<ServerRecord> {
    // As getServer: the lookup on a miss is part of the caller's request.
    const timings = currentTimings();
    const server = (await this.store.getServer(serverId)) ?? (await withTimings(timings, () => this.lookUpOnMiss(serverId)));
    if (!server || (!anyProject && server.projectId !== projectId)) throw errors.instanceNotFound(serverId);
    return server;
  }

  private lookUpOnMiss(serverId: string): Promise<ServerRecord | undefined> | undefined {
    const running = this.missLookups.get(serverId);
    if (running) return running;
    const now = Date.now();
    for (const [id, at] of this.missedAt) {
      if (now - at < this.syncOnMissIntervalMs) break;
      this.missedAt.delete(id);
    }
    if (this.missedAt.has(serverId) || this.missedAt.size >= this.lookupsOnMissPerInterval) return undefined;
    this.missedAt.set(serverId, now);
    const lookup = this.rpc
      .syncServer(undefined, serverId)
      .catch((err: unknown) => {
        this.log.warn({ err, serverId }, 'server lookup failed');
        return undefined;
      })
      .finally(() => this.missLookups.delete(serverId));
    this.missLookups.set(serverId, lookup);
    return lookup;
  }

  /**
   * A page of servers by name then id (`page.marker`: a server id): of `filter.projectId`, or of
   * every project when it is undefined, keeping only those `filter.matches` accepts (Nova's
   * `name` filter). Filtered in batches of the store's keyset pages, so a page costs what it
   * skips, never the whole listing at once. MarkerNotFound (400) for a marker not in the listing.
   */
  async listServers(filter: { projectId?: string | undefined; matches?: ((s: ServerRecord) => boolean) | undefined }, page: PageQuery): Promise<ServerRecord[]> {
    const projectFilter = filter.projectId === undefined ? {} : { projectId: filter.projectId };
    const matches = filter.matches;
    if (!matches) return this.store.listServers(projectFilter, page);
    const out: ServerRecord[] = [];
    const batch = Math.max(page.limit, 100);
    let marker = page.marker;
    // The caller's request timings: every batch after the first is read after an await (util/timing.ts).
    const timings = currentTimings();
    while (out.length < page.limit) {
      const rows = await withTimings(timings, () => this.store.listServers(projectFilter, { limit: batch, marker }));
      for (const s of rows) if (matches(s) && out.length < page.limit) out.push(s);
      if (rows.length < batch) break;
      marker = rows.at(-1)!.id;
    }
    return out;
  }

  /** A page of `server`'s instance actions, newest first (`page.marker`: a request id); `server` as `findServer` gave it. */
  actionsOf(server: ServerRecord, page: PageQuery): Promise<InstanceActionRecord[]> {
    return this.store.listActions(server.id, page);
  }

  /** One of `server`'s instance actions; NotFound (404) when it has none with `requestId`. */
  async actionOf(server: ServerRecord, requestId: string): Promise<InstanceActionRecord> {
    const action = await this.store.getAction(server.id, requestId);
    if (!action) throw errors.notFound(`Action ${requestId} on instance ${server.id} could not be found.`);
    return action;
  }

  /** PUT rescan: checks now, runs on the host in the background; the action finishes when it does. */
  async rescan(ctx: RequestContext, server: ServerRecord, volumeId: string): Promise<void> {
    const attachment = this.attachment(server, volumeId);
    this.checkIdle(server, 'rescan volume', VOLUME_TASK_STATES);
    server = await within(ctx, () => this.requireState(server, RESCANNABLE_STATES, 'rescan volume'));
    const host = server.host;
    this.checkExtendCapability(await this.hostCapabilities(ctx.timings, host));
    const details = { volume_id: volumeId, device: attachment.device };
    // The start is written before the host is asked, as `audited` does: enqueued now, committed at
    // the end of this event-loop turn (group commit), long before a rescan (a host tool's run)
    // can finish; the host starts at once instead of one commit later (an extend waits for it).
    // The caller's 202 still waits for the commit, and the finish is written only after it.
    const [started, rescanned] = within(ctx, () => [
      this.store.startAction(this.newAction(ctx, server, ACTIONS.rescan, details)),
      this.rpc.rescan(host, server.id, volumeId),
    ] as const);
    void started.then(
      () =>
        rescanned.then(
          () => this.finish(ctx, server, 'Success', null),
          (err: unknown) => {
            this.log.error({ err, serverId: server.id, volumeId, requestId: ctx.requestId }, 'rescan failed');
            return this.finish(ctx, server, 'Error', errorMessage(err));
          },
        ),
      // No start recorded (the caller is told): nothing to finish; the rescan is idempotent.
      () => rescanned.catch((err: unknown) => this.log.error({ err, serverId: server.id, volumeId, requestId: ctx.requestId }, 'rescan failed')),
    );
    await started;
  }

  /**
   * GET get_blockdev: the size in bytes the host sees now, measured. A read: it writes nothing
   * (no instance action, as Nova records only what changes an instance); it leaves a debug log
   * line with its request id, so a volume action's compute request ids can still be followed.
   */
  getBlockdev(ctx: RequestContext, server: ServerRecord, volumeId: string): Promise<number> {
    // The read hot path (the volume service polls it): no promise of its own when the host's
    // capabilities are known and debug logging is off, only the host's answer.
    try {
      this.attachment(server, volumeId);
      const caps = this.hostCapabilities(ctx.timings, server.host);
      if (caps instanceof Promise) return caps.then((c) => this.readHostBytes(ctx, server, volumeId, c));
      return this.readHostBytes(ctx, server, volumeId, caps);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** getBlockdev once the host's capabilities are known: ExtendVolumeNotSupported (501), or the host's measure. */
  private readHostBytes(ctx: RequestContext, server: ServerRecord, volumeId: string, caps: HostCapabilities): Promise<number> {
    this.checkExtendCapability(caps);
    const read = within(ctx, () => this.rpc.getHostBytes(server.host, server.id, volumeId));
    // Guarded: at debug level off (the default) a read costs no log object at all.
    if (!this.log.isLevelEnabled('debug')) return read;
    const fields = { requestId: ctx.requestId, userId: ctx.userId, serverId: server.id, volumeId };
    return read.then(
      (bytes) => {
        this.log.debug({ ...fields, bytes }, 'volume host size read');
        return bytes;
      },
      (err: unknown) => {
        this.log.debug({ ...fields, code: isServiceError(err) ? err.code : 'InternalError' }, 'volume host size read failed');
        throw err;
      },
    );
  }

  /** POST assist_extend: grow the guest's view to `bytes`; returns the size measured afterwards. */
  async assistExtend(ctx: RequestContext, server: ServerRecord, volumeId: string, bytes: number): Promise<number> {
    this.attachment(server, volumeId);
    this.checkIdle(server, 'extend volume', VOLUME_TASK_STATES);
    server = await within(ctx, () => this.requireState(server, RESIZABLE_STATES, 'extend volume'));
    this.checkExtendCapability(await this.hostCapabilities(ctx.timings, server.host));
    return this.audited(ctx, server, ACTIONS.assistExtend, { volume_id: volumeId, requested_bytes: bytes }, async () => {
      const measured = await this.rpc.extendAttached(server.host, server.id, volumeId, bytes);
      return { value: measured, details: { volume_id: volumeId, requested_bytes: bytes, bytes: measured } };
    });
  }

  /**
   * Grow the last partition and the filesystem on the volume's disk inside the guest (the volume
   * service's grow_fs step, after the extend); answers what the guest reported, never the
   * operator-only detail. A guest without an agent or a disk with nothing to grow is an answer
   * (grown false, a reason), not an error. Recorded as an instance action `extend_volume`, event
   * `compute_grow_guest_filesystem`, whose details name the result (`grown`, `reason`, `device`,
   * `fs_type`, `fs_bytes_before`, `fs_bytes`). Throws VolumeNotAttached (404), InstanceBusy
   * (409), GuestFilesystemGrowNotSupported (501) when the host's driver cannot, and what the host
   * throws (InstanceNotFound 404, HypervisorUnreachable 503 uncertain).
   */
  async growGuestFilesystem(ctx: RequestContext, server: ServerRecord, volumeId: string): Promise<GuestFilesystemGrowth> {
    this.attachment(server, volumeId);
    this.checkIdle(server, 'grow guest filesystem', VOLUME_TASK_STATES);
    const caps = await this.hostCapabilities(ctx.timings, server.host);
    // An agent of an older version reports no such capability: it cannot.
    if (caps.capabilities.growGuestFilesystem !== true) throw errors.guestFsGrowNotSupported(caps.driver);
    return this.audited(ctx, server, ACTIONS.growGuestFilesystem, { volume_id: volumeId }, async () => {
      const growth = await this.rpc.growGuestFilesystem(server.host, server.id, volumeId);
      return { value: growth, details: { volume_id: volumeId, ...growthDetails(growth) } };
    });
  }

  /**
   * Whether `server` can take a volume now (Nova's check_instance_state on attach_volume): idle,
   * running or paused, on a driver that attaches, and the device name asked for (`spec.device`,
   * e.g. `vdc`) free. The volume service asks before it reserves the volume, so a refusal here
   * leaves the volume as it was. Returns the server as last reported. Throws InstanceBusy,
   * InstanceStopped or InstanceInvalidState, DevicePathInUse (409), TooManyDiskDevices (403),
   * ExtendVolumeNotSupported (501).
   */
  async checkAttach(server: ServerRecord, spec: Pick<AttachSpec, 'volumeId' | 'device'>): Promise<ServerRecord> {
    // The attach this check is part of may have set the server's task already (withTask).
    this.checkIdle(server, 'attach volume', VOLUME_TASKS.attach);
    // The caller's request timings (no ctx here), current now but not after the state's await.
    const timings = currentTimings();
    const fresh = await this.requireState(server, RESIZABLE_STATES, 'attach volume');
    const caps = await this.hostCapabilities(timings, fresh.host);
    if (!caps.capabilities.attachVolume) throw errors.extendNotSupported(caps.driver);
    const already = fresh.attachments.some((a) => a.volumeId === spec.volumeId);
    if (!already && fresh.attachments.length >= caps.capabilities.maxVolumesPerServer) throw errors.tooManyDiskDevices(fresh.id);
    // Nova reserves the device name before the volume; a name another disk has is refused here.
    const taken = fresh.attachments.find((a) => a.device === spec.device);
    if (spec.device !== undefined && taken && taken.volumeId !== spec.volumeId) throw errors.devicePathInUse(spec.device, fresh.id);
    return fresh;
  }

  async attachVolume(ctx: RequestContext, server: ServerRecord, spec: AttachSpec): Promise<AttachmentRecord> {
    server = await within(ctx, () => this.checkAttach(server, spec));
    const existing = server.attachments.find((a) => a.volumeId === spec.volumeId);
    if (existing) return existing;
    const device = await this.audited(ctx, server, ACTIONS.attach, { volume_id: spec.volumeId }, async () => {
      const dev = await this.rpc.attachVolume(server.host, server.id, spec);
      return { value: dev, details: { volume_id: spec.volumeId, device: dev } };
    });
    return {
      serverId: server.id,
      volumeId: spec.volumeId,
      device,
      kind: spec.kind,
      ...(spec.format === undefined ? {} : { format: spec.format }),
      source: spec.source,
      readonly: false,
    };
  }

  async detachVolume(ctx: RequestContext, server: ServerRecord, volumeId: string): Promise<void> {
    this.attachment(server, volumeId);
    // A server being deleted has its volumes detached first (compute/servers.ts).
    this.checkIdle(server, 'detach volume', DETACH_ALLOWED_TASKS);
    await this.audited(ctx, server, ACTIONS.detach, { volume_id: volumeId }, async () => {
      await this.rpc.detachVolume(server.host, server.id, volumeId);
      return { value: undefined, details: { volume_id: volumeId } };
    });
  }

  /** Runs `fn` as the server's task `task` (tasks.ts `withTask`): InstanceBusy (409) if another task is under way. */
  withTask<T>(ctx: RequestContext, server: ServerRecord, task: VolumeTask, fn: () => Promise<T>): Promise<T> {
    this.checkIdle(server, `${task} volume`);
    return withTask(this.store, this.log, ctx, server, task, fn);
  }

  /** At start-up: clear the volume tasks an earlier process left on `host` (tasks.ts `clearStaleTasks`). */
  clearStaleTasks(host: string): Promise<string[]> {
    return clearStaleTasks(this.store, this.log, host);
  }

  /**
   * The server as the hypervisor has it now, not as last stored: that one server is looked up.
   * For decisions that must not act on a stale copy (is this disk plugged in?). Throws
   * InstanceNotFound when the server is gone or belongs to another project.
   */
  async freshServer(tenantId: string, serverId: string): Promise<ServerRecord> {
    // The caller's request timings, current now but not after the store's await (util/timing.ts).
    const timings = currentTimings();
    const known = await this.store.getServer(serverId);
    const server = await withTimings(timings, () => this.rpc.syncServer(known?.host, serverId));
    if (!server || server.projectId !== tenantId) throw errors.instanceNotFound(serverId);
    return server;
  }

  attachment(server: ServerRecord, volumeId: string): AttachmentRecord {
    const a = server.attachments.find((x) => x.volumeId === volumeId);
    if (!a) throw errors.volumeNotAttached(volumeId, server.id);
    return a;
  }

  /**
   * The server in one of `allowed` states, or 409. Our copy of the state may be stale (a guest
   * started since the last sync), so a refusal is only given after asking the hypervisor again,
   * about this server only (ComputeRpc.syncServer, which also records what it finds). If the
   * host cannot be asked, our copy decides; a server the host no longer has is InstanceNotFound.
   */
  private async requireState(server: ServerRecord, allowed: ReadonlySet<string>, action: string): Promise<ServerRecord> {
    if (allowed.has(server.state)) return server;
    const fresh = await this.rpc.syncServer(server.host, server.id).catch((err: unknown) => {
      this.log.warn({ err, serverId: server.id }, 'server sync failed');
      return server;
    });
    if (!fresh) throw errors.instanceNotFound(server.id);
    if (!allowed.has(fresh.state)) throw errors.instanceInvalidState(server.id, fresh.state, action);
    return fresh;
  }

  /**
   * The host's driver name and capabilities (ComputeRpc.capabilities), asked at most once per
   * CAPABILITIES_TTL_MS per host: the answer itself when it is known (no promise), else the
   * call's promise (as part of the request whose `timings` are given).
   * A failed call is not kept. Throws what the call throws (ComputeHostUnavailable…).
   */
  private hostCapabilities(timings: RequestTimings | undefined, host: string): HostCapabilities | Promise<HostCapabilities> {
    const known = this.capabilitiesByHost.get(host);
    if (known !== undefined && Date.now() - known.at < CAPABILITIES_TTL_MS) return known.answer;
    const asked = withTimings(timings, () => this.rpc.capabilities(host));
    return asked.then((answer) => {
      this.capabilitiesByHost.set(host, { at: Date.now(), answer });
      return answer;
    });
  }

  /** InstanceBusy (409) while the server has a task under way, unless it is one of `allowed`. */
  private checkIdle(server: ServerRecord, action: string, allowed: ReadonlySet<string> | string = new Set()): void {
    if (server.taskState === null) return;
    if (typeof allowed === 'string' ? server.taskState === allowed : allowed.has(server.taskState)) return;
    throw errors.instanceBusy(server.id, server.taskState, action);
  }

  /** ExtendVolumeNotSupported (501) unless the host's driver extends volumes (`caps`: ComputeRpc.capabilities of the server's host). */
  private checkExtendCapability(caps: { driver: string; capabilities: { extendVolume: boolean } }): void {
    if (!caps.capabilities.extendVolume) throw errors.extendNotSupported(caps.driver);
  }

  private newAction(
    ctx: RequestContext,
    server: ServerRecord,
    name: ActionName,
    details: Record<string, unknown>,
  ): Omit<InstanceActionRecord, 'finishTime' | 'result'> {
    return {
      requestId: ctx.requestId,
      serverId: server.id,
      action: name.action,
      event: name.event,
      userId: ctx.userId,
      projectId: ctx.projectId,
      startTime: new Date().toISOString(),
      message: null,
      details,
    };
  }

  private async audited<T>(
    ctx: RequestContext,
    server: ServerRecord,
    name: ActionName,
    details: Record<string, unknown>,
    fn: () => Promise<{ value: T; details: Record<string, unknown> }>,
  ): Promise<T> {
    // Not awaited: the store commits it at the end of this event-loop turn (group commit), which
    // is before any reply from the hypervisor can arrive, so the start is on disk before the
    // driver is asked to change anything, without making the caller wait for the commit.
    // `fn` and the records are the request's own time (its Server-Timing parts).
    const [started, running] = within(ctx, () => [this.store.startAction(this.newAction(ctx, server, name, details)), fn()] as const);
    started.catch((err: unknown) => this.log.error({ err, requestId: ctx.requestId, serverId: server.id }, 'recording instance action failed'));
    try {
      const out = await running;
      await started;
      await this.finish(ctx, server, 'Success', null, out.details);
      return out.value;
    } catch (err) {
      await this.finish(ctx, server, 'Error', errorMessage(err));
      if (isServiceError(err) && (err.code === 'InstanceNotFound' || err.code === 'InstanceInvalidState' || err.code === 'InstanceStopped')) {
        // The hypervisor knows better than our copy of its inventory: refresh this server's.
        void this.rpc.syncServer(server.host, server.id).catch(() => undefined);
      }
      throw err;
    }
  }

  private finish(ctx: RequestContext, server: ServerRecord, result: ActionResult, message: string | null, details?: Record<string, unknown>) {
    return within(ctx, () => this.store.finishAction(ctx.requestId, server.id, result, message, details)).catch((err: unknown) => {
      this.log.error({ err, requestId: ctx.requestId, serverId: server.id }, 'recording instance action failed');
    });
  }
}

/** A guest filesystem growth as an instance action's details (snake_case, as Nova's); never its detail text. */
function growthDetails(g: GuestFilesystemGrowth): Record<string, unknown> {
  const out: Record<string, unknown> = { grown: g.grown };
  if (g.reason !== undefined) out.reason = g.reason;
  if (g.device !== undefined) out.device = g.device;
  if (g.partitionGrown !== undefined) out.partition_grown = g.partitionGrown;
  if (g.fsType !== undefined) out.fs_type = g.fsType;
  if (g.mountpoint !== undefined) out.mountpoint = g.mountpoint;
  if (g.fsBytesBefore !== undefined) out.fs_bytes_before = g.fsBytesBefore;
  if (g.fsBytes !== undefined) out.fs_bytes = g.fsBytes;
  return out;
}

/**
 * `call()` as part of `ctx`'s request: the store, RPC and driver layers it reaches add their time
 * to the request's Server-Timing parts (util/timing.ts). Every call after an await goes through
 * here, since nothing is current there.
 */
function within<T>(ctx: RequestContext, call: () => T): T {
  return withTimings(ctx.timings, call);
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
