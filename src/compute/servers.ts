/**
 * Creating and deleting servers (Nova's compute API create/delete and the manager's
 * build_and_run_instance/terminate_instance, reduced to one host). The API answers at once (202,
 * 204) and the work goes on in the background, visible as Nova shows it:
 *
 *   create: vm_state `building`, task_state scheduling → block_device_mapping → networking →
 *           spawning → null with vm_state `active`; a failure leaves vm_state `error` with a fault
 *           (the driver leaves nothing behind). Recorded as the `create` action with its
 *           `compute__do_build_and_run_instance` event.
 *   delete: refused up front (409 InstanceBusy, uncertain: try again) while an attached volume
 *           is attaching, detaching or extending, as read from the volume service: its detach
 *           would be refused, so the delete is not accepted only to be dropped. Otherwise
 *           task_state `deleting`; every attached volume is detached through the volume service
 *           first (as Nova detaches on delete), so no volume is left in-use on a server that is
 *           gone; then the driver destroys the server and the record goes (GET: 404). Recorded as
 *           the `delete` action (`compute_terminate_instance`).
 *
 * Races after the 204 (a volume starts extending between the check and its detach, the volume
 * service is briefly away): an uncertain refusal of a detach (VolumeBusy, ServiceUnavailable, …)
 * is retried with backoff for up to `detachRetryMs`; a detach whose answer was lost but which
 * happened (the volume reads detached) counts as done. A final refusal, or the bound running
 * out, ends the delete as Nova's terminate_instance ends on an error: vm_state `error` with the
 * fault (code, message), task_state null, the action's event `Error` with the message; the
 * server and the volumes not yet detached stay (delete it again). The hypervisor still runs the
 * server, so the next inventory sync shows its power state again (ACTIVE); the action keeps the
 * error.
 *
 * A delete interrupted by the process dying (task_state `deleting` at start-up) is resumed by
 * `recover`, as Nova's init_host completes interrupted deletes: detach what is still attached,
 * destroy, forget, and finish the delete actions left open. Every step is idempotent.
 *
 * A delete during a build is allowed (as in Nova): the build stops at its next step, or, if the
 * driver is already spawning, the delete waits for it and then destroys what it made.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { RequestContext } from '../context.js';
import type { ComputeStore, FlavorRecord, ImageRecord, ServerRecord } from '../db/store.js';
import { errors, isFinalError, isServiceError, NO_AGENT_LISTENING } from '../errors.js';
import type { VolumesForCompute } from '../rpc/volumeClient.js';
import type { SpawnImage, SpawnSpec } from '../virt/driver.js';
import type { ComputeRpc } from './rpc.js';
import { DELETING } from './tasks.js';
import { withTimings } from '../util/timing.js';

export { DELETING };

/** Nova's build task states, in order; the last is followed by task_state null and vm_state `active`. */
export const BUILD_TASK_STATES = ['scheduling', 'block_device_mapping', 'networking', 'spawning'] as const;
const BUILDING: ReadonlySet<string> = new Set(BUILD_TASK_STATES);

/** Nova's instance action and event names of create and delete. */
export const SERVER_ACTIONS = {
  create: { action: 'create', event: 'compute__do_build_and_run_instance' },
  delete: { action: 'delete', event: 'compute_terminate_instance' },
} as const;

/** What POST /servers asks for, validated for shape by the route. `metadata`: Nova's, string → string. */
export interface CreateServerRequest {
  name: string;
  imageRef: string;
  flavorRef: string;
  metadata: Record<string, string>;
}

/** What create answers (Nova's create view): the new server and its one-time admin password. */
export interface CreatedServer {
  server: ServerRecord;
  adminPass: string;
}

/** Volume statuses whose detach the volume service refuses for now (busy): a delete is refused up front while an attached volume has one. */
export const DELETE_BLOCKING_VOLUME_STATUSES: ReadonlySet<string> = new Set(['attaching', 'detaching', 'extending']);

/** How long a delete retries a detach refused for now (ms) by default: an extend on the fake driver with latency takes tens of seconds. */
export const DEFAULT_DETACH_RETRY_MS = 120_000;

/** What ServerLifecycle is built from: the store, the hosts, the host it builds on, and the volume service (detach on delete; absent: none to detach). */
export interface ServerLifecycleOptions {
  store: ComputeStore;
  rpc: ComputeRpc;
  logger: Logger;
  /** The compute host new servers are built on (`serve`: its one host); or give `chooseHost`. */
  host?: string;
  /**
   * Picks the host each new server is built on (the `api` role: ComputeServices.chooseHost among
   * the hosts up and enabled); its errors refuse the create before anything is recorded. Wins
   * over `host`.
   */
  chooseHost?: (exclude?: ReadonlySet<string>) => Promise<string>;
  volumes?: VolumesForCompute;
  /** How long (ms) a delete retries a detach the volume service refuses for now (default DEFAULT_DETACH_RETRY_MS). */
  detachRetryMs?: number;
  /**
   * A token acting in `server`'s project for the detaches of a delete resumed at start-up (no
   * caller's token then; Nova uses its own service credentials there). Absent: a resumed delete
   * of a server with volumes ends in error (the user deletes it again).
   */
  recoveryToken?: (server: ServerRecord) => Promise<string>;
}

/** See the module comment. */
export class ServerLifecycle {
  private readonly store: ComputeStore;
  private readonly rpc: ComputeRpc;
  private readonly log: Logger;
  private readonly chooseHost: (exclude?: ReadonlySet<string>) => Promise<string>;
  private readonly volumes: VolumesForCompute | undefined;
  private readonly detachRetryMs: number;
  private readonly recoveryToken: ((server: ServerRecord) => Promise<string>) | undefined;
  /** Builds under way, by server id (a delete waits for its server's). */
  private readonly builds = new Map<string, Promise<void>>();
  /** Every background job under way (builds and deletes), for `idle`. */
  private readonly jobs = new Set<Promise<void>>();

  constructor(opts: ServerLifecycleOptions) {
    this.store = opts.store;
    this.rpc = opts.rpc;
    this.log = opts.logger;
    const fixed = opts.host;
    if (!opts.chooseHost && fixed === undefined) throw new Error('ServerLifecycle: give host or chooseHost');
    this.chooseHost = opts.chooseHost ?? (() => Promise.resolve(fixed!));
    this.volumes = opts.volumes;
    this.detachRetryMs = opts.detachRetryMs ?? DEFAULT_DETACH_RETRY_MS;
    this.recoveryToken = opts.recoveryToken;
  }

  /**
   * Checks the request, records the server (`building`, `scheduling`) and the `create` action,
   * and builds it in the background. Throws BadRequest (400) for an unknown image ("Can not find
   * requested image") or flavor ("Invalid flavorRef provided."), or a flavor too small for the
   * image, CreateServerNotSupported (501) when the host's driver cannot create servers, and
   * what `chooseHost` throws (ServiceUnavailable 503 when no host is up and enabled).
   */
  async create(ctx: RequestContext, req: CreateServerRequest): Promise<CreatedServer> {
    // The request's Server-Timing parts (util/timing.ts), re-entered for each store and host call
    // after an await; the build started below is not the request's (it runs after the answer).
    const within = <T>(call: () => T): T => withTimings(ctx.timings, call);
    const image = await within(() => this.store.getImage(req.imageRef));
    if (!image) throw errors.badRequest('Can not find requested image');
    const flavor = await within(() => this.store.getFlavor(req.flavorRef));
    if (!flavor) throw errors.badRequest('Invalid flavorRef provided.');
    if (flavor.ramMb < image.minRamMb) throw errors.badRequest("Flavor's memory is too small for requested image.");
    if (flavor.diskGb > 0 && flavor.diskGb < image.minDiskGb) throw errors.badRequest("Flavor's disk is too small for requested image.");
    const boot = spawnImage(image);
    // A host whose agent has just died still looks up until its heartbeat is stale: the broker's
    // answer that nobody listens on its queue means the call was certainly not delivered, so the
    // next host is tried (as Nova reschedules), never a host twice.
    const tried = new Set<string>();
    let host: string;
    let caps: Awaited<ReturnType<ComputeRpc['capabilities']>>;
    for (;;) {
      const chosen = await within(() => this.chooseHost(tried));
      // A chooser that ignores `exclude` would loop forever: refuse as "no host" instead.
      if (tried.has(chosen)) throw errors.serviceUnavailable('No valid host was found. There are not enough hosts available.');
      host = chosen;
      try {
        caps = await within(() => this.rpc.capabilities(host));
        break;
      } catch (err) {
        if (!(isServiceError(err) && err.code === 'ComputeHostUnavailable' && err.reason === NO_AGENT_LISTENING)) throw err;
        this.log.warn({ host }, 'no compute agent listens on the chosen host; choosing another');
        tried.add(host);
      }
    }
    if (!caps.capabilities.spawnServer) throw errors.createServerNotSupported(caps.driver);
    const id = randomUUID();
    const createdAt = new Date().toISOString();
    const record = { id, name: req.name, projectId: ctx.projectId, userId: ctx.userId, createdAt, imageRef: image.id, flavorRef: flavor.id, metadata: req.metadata };
    if (!(await within(() => this.store.createServer(host, { ...record, taskState: BUILD_TASK_STATES[0] })))) throw errors.internal('A new server id was already taken.');
    await within(() => this.store.startAction(this.action(ctx, id, SERVER_ACTIONS.create, createdAt, { image: image.id, flavor: flavor.id })));
    const spec: SpawnSpec = { id, name: req.name, projectId: ctx.projectId, userId: ctx.userId, image: boot, vcpus: flavor.vcpus, ramMb: flavor.ramMb, rootDiskGb: flavor.diskGb };
    const build = this.track(this.build(ctx, host, spec, flavor));
    this.builds.set(id, build);
    void build.finally(() => this.builds.delete(id));
    const server = await within(() => this.store.getServer(id));
    if (!server) throw errors.instanceNotFound(id);
    // Nova's admin password: generated, shown once, not kept (no guest agent sets it here).
    return { server, adminPass: randomBytes(9).toString('base64url') };
  }

  /**
   * Starts deleting `server` (task_state `deleting`, the `delete` action) and finishes in the
   * background (see the module comment). `token`: the caller's, which the volume service's
   * detaches are made with (as Nova calls Cinder with the user's token). Throws InstanceBusy (409,
   * uncertain) while another task than a build is under way (an attach, a detach, a delete) or an
   * attached volume is attaching, detaching or extending (DELETE_BLOCKING_VOLUME_STATUSES), the
   * volume service's uncertain errors when it cannot say (503 ServiceUnavailable), and
   * InstanceInvalidState (409) for a server this API did not create (a domain found on the host).
   * Nothing is changed when it throws.
   */
  async delete(ctx: RequestContext, server: ServerRecord, token: string): Promise<void> {
    // A domain found on the host (the operator's, or the lab's) is never destroyed from the API.
    if (server.createdAt === undefined) throw errors.instanceNotOurs(server.id);
    const from = server.taskState;
    if (from !== null && !BUILDING.has(from)) throw errors.instanceBusy(server.id, from, 'delete');
    // The request's Server-Timing parts (util/timing.ts), re-entered after each await; the
    // termination started below is not the request's (it runs after the 204).
    const within = <T>(call: () => T): T => withTimings(ctx.timings, call);
    await this.checkVolumes(ctx, server, token);
    if (!(await within(() => this.store.setTaskState(server.id, DELETING, from)))) {
      const now = await within(() => this.store.getServer(server.id));
      if (!now) throw errors.instanceNotFound(server.id);
      throw errors.instanceBusy(server.id, now.taskState ?? 'unknown', 'delete');
    }
    await within(() => this.store.startAction(this.action(ctx, server.id, SERVER_ACTIONS.delete, new Date().toISOString(), {})));
    void this.track(this.terminate(ctx, server, token));
  }

  /** Resolves when every build and delete under way has ended (tests; a graceful stop). */
  async idle(): Promise<void> {
    while (this.jobs.size > 0) await Promise.allSettled([...this.jobs]);
  }

  /**
   * At start-up, before anything of this process runs: a server left `building` by a process
   * that died fails its build (vm_state `error`, as Nova's init_host does), and a delete left
   * half done is resumed in the background (Nova's init_host completes interrupted deletes): its
   * volumes still attached are detached (with `recoveryToken`; the volume service may not listen
   * yet, which is retried as any uncertain refusal), the server destroyed and forgotten, and the
   * delete actions left open finished. Answers the ids of the servers failed or being deleted;
   * `idle()` waits for the deletes.
   */
  async recover(host: string): Promise<string[]> {
    const changed: string[] = [];
    const created = new Date().toISOString();
    const deleting: ServerRecord[] = [];
    for (const s of await this.store.listServers()) {
      if (s.host !== host) continue;
      if (s.state === 'building' && (s.taskState === null || BUILDING.has(s.taskState))) {
        const fault = { code: 500, message: 'The compute service restarted while the server was building.', created };
        if (await this.store.setServerState(s.id, { state: 'error', taskState: null, fault }, s.taskState)) changed.push(s.id);
      } else if (s.taskState === DELETING) {
        deleting.push(s);
        changed.push(s.id);
      }
    }
    if (changed.length) this.log.warn({ servers: changed }, 'recovered servers an earlier process left building or deleting');
    if (deleting.length === 0) return changed;
    const open = await this.store.listUnfinishedActions(SERVER_ACTIONS.delete.action);
    for (const s of deleting) {
      // The newest open delete action carries the resumed delete; older ones (none, normally: a
      // second delete is refused while one runs) are finished with it.
      const mine = open.filter((a) => a.serverId === s.id);
      const last = mine.at(-1);
      let ctx: RequestContext;
      if (last) {
        ctx = { requestId: last.requestId, userId: last.userId, projectId: last.projectId, roles: [] };
      } else {
        // Died between the task state and the action: record the action now, so the delete is visible.
        ctx = { requestId: `req-${randomUUID()}`, userId: s.userId ?? 'unknown', projectId: s.projectId, roles: [] };
        await this.store.startAction(this.action(ctx, s.id, SERVER_ACTIONS.delete, created, {}));
      }
      this.log.warn({ serverId: s.id, requestId: ctx.requestId }, 'resuming a delete an earlier process left under way');
      void this.track(this.terminate(ctx, s, undefined, mine.slice(0, -1).map((a) => a.requestId)));
    }
    return changed;
  }

  private track(job: Promise<void>): Promise<void> {
    const p = job.catch((err: unknown) => this.log.error({ err }, 'server job failed'));
    this.jobs.add(p);
    void p.finally(() => this.jobs.delete(p));
    return p;
  }

  /** The build: each task state in turn (each step only if nobody moved the task since), then spawn. */
  private async build(ctx: RequestContext, host: string, spec: SpawnSpec, flavor: FlavorRecord): Promise<void> {
    const id = spec.id;
    let at: string = BUILD_TASK_STATES[0];
    try {
      for (const next of BUILD_TASK_STATES.slice(1)) {
        if (!(await this.store.setServerState(id, { state: 'building', taskState: next }, at))) {
          await this.finish(ctx, id, 'Error', 'The server was deleted while it was building.');
          return;
        }
        at = next;
      }
      const spawned = await this.rpc.spawn(host, spec);
      // A delete may have taken the task meanwhile: it destroys what was made (it waits for this build).
      if (!(await this.store.setServerState(id, { state: 'active', taskState: null }, at))) {
        await this.finish(ctx, id, 'Error', 'The server was deleted while it was building.');
        return;
      }
      this.log.info({ serverId: id, requestId: ctx.requestId, vcpus: flavor.vcpus, ramMb: flavor.ramMb, state: spawned.state }, 'server built');
      await this.rpc.syncServer(host, id).catch(() => undefined);
      await this.finish(ctx, id, 'Success', null);
    } catch (err) {
      const message = isServiceError(err) ? err.message : 'An unexpected error occurred.';
      const code = isServiceError(err) ? err.status : 500;
      this.log.error({ err, serverId: id, requestId: ctx.requestId }, 'server build failed');
      await this.store.setServerState(id, { state: 'error', taskState: null, fault: { code, message, created: new Date().toISOString() } }, at);
      await this.finish(ctx, id, 'Error', message);
    }
  }

  /**
   * Refuses the delete (InstanceBusy, 409) while an attached volume's detach would be refused
   * for now (DELETE_BLOCKING_VOLUME_STATUSES), read from the volume service with the caller's
   * token. An uncertain failure to read (the volume service away) refuses too (503: try again);
   * a final one (e.g. the policy hides the volume) leaves the decision to the detach itself.
   */
  private async checkVolumes(ctx: RequestContext, server: ServerRecord, token: string): Promise<void> {
    if (!this.volumes) return;
    const volumes = this.volumes;
    for (const a of server.attachments) {
      let state;
      try {
        // Each read is part of the request (util/timing.ts: after the first, nothing is current).
        state = (await withTimings(ctx.timings, () => volumes.volume(token, server.projectId, a.volumeId))).value;
      } catch (err) {
        if (!isFinalError(err)) throw err;
        this.log.warn({ err, serverId: server.id, volumeId: a.volumeId, requestId: ctx.requestId }, 'could not read an attached volume before a delete');
        continue;
      }
      if (state && DELETE_BLOCKING_VOLUME_STATUSES.has(state.status)) throw errors.instanceVolumeBusy(server.id, a.volumeId, state.status, 'delete');
    }
  }

  /**
   * The delete: wait for a build, detach every volume through the volume service, destroy,
   * forget (see the module comment for retries and failures). `token`: the caller's; undefined
   * for a delete resumed at start-up (`recoveryToken` then). `alsoFinish`: request ids of other
   * open delete actions of the server, finished with this one.
   */
  private async terminate(ctx: RequestContext, server: ServerRecord, token: string | undefined, alsoFinish: string[] = []): Promise<void> {
    const id = server.id;
    const finishAll = async (result: 'Success' | 'Error', message: string | null) => {
      for (const requestId of alsoFinish) await this.finish({ ...ctx, requestId }, id, result, message);
      await this.finish(ctx, id, result, message);
    };
    try {
      await this.builds.get(id);
      const fresh = (await this.rpc.syncServer(server.host, id).catch(() => undefined)) ?? (await this.store.getServer(id)) ?? server;
      // A resumed delete has no caller's token: one token of compute's own for all its detaches.
      const t = token ?? (this.volumes && fresh.attachments.length > 0 && this.recoveryToken ? await this.recoveryToken(fresh) : undefined);
      for (const a of fresh.attachments) {
        if (!this.volumes) break; // no volume service: the driver unplugs the disks with the server
        await this.detachForDelete(ctx, fresh, a.volumeId, t);
        this.log.info({ serverId: id, volumeId: a.volumeId, requestId: ctx.requestId }, 'volume detached for delete');
      }
      try {
        await this.rpc.destroy(server.host, id);
      } catch (err) {
        // Already destroyed (a resumed delete whose process died after the destroy): done.
        if (!(isServiceError(err) && err.code === 'InstanceNotFound')) throw err;
      }
      // The action first: a process dying between the two resumes the delete and finishes again.
      await finishAll('Success', null);
      await this.store.deleteServer(id);
      this.log.info({ serverId: id, requestId: ctx.requestId }, 'server deleted');
    } catch (err) {
      this.log.error({ err, serverId: id, requestId: ctx.requestId }, 'server delete failed');
      // As Nova's terminate_instance on an error: vm_state ERROR with the fault, task_state null.
      const message = isServiceError(err) ? err.message : 'An unexpected error occurred.';
      const fault = { code: isServiceError(err) ? err.status : 500, message, created: new Date().toISOString() };
      await this.store.setServerState(id, { state: 'error', taskState: null, fault }, DELETING).catch(() => false);
      await finishAll('Error', message);
    }
  }

  /**
   * Detaches `volumeId` from `server` for its delete. An uncertain refusal (VolumeBusy: the
   * volume started extending after the check; ServiceUnavailable) is retried with backoff until
   * `detachRetryMs` has passed; any refusal after which the volume reads detached from this
   * server counts as done (an earlier attempt, or the process before a crash, did it). Throws
   * the last refusal otherwise.
   */
  private async detachForDelete(ctx: RequestContext, server: ServerRecord, volumeId: string, token: string | undefined): Promise<void> {
    const volumes = this.volumes!;
    const deadline = Date.now() + this.detachRetryMs;
    if (token === undefined) {
      throw errors.internal(`The compute service restarted while instance ${server.id} was being deleted and cannot detach volume ${volumeId} on its own; delete the server again.`);
    }
    const t = token;
    for (let delay = 100; ; delay = Math.min(delay * 2, 5_000)) {
      try {
        await volumes.detach(t, server.projectId, server.id, volumeId);
        return;
      } catch (err) {
        const now = await volumes.volume(t, server.projectId, volumeId).then((r) => r.value, () => undefined);
        if (now && !now.serverIds.includes(server.id) && !DELETE_BLOCKING_VOLUME_STATUSES.has(now.status)) return;
        if (isFinalError(err) || Date.now() + delay > deadline) throw err;
        const e = err as { code?: string };
        this.log.warn({ serverId: server.id, volumeId, requestId: ctx.requestId, code: e.code, retryInMs: delay }, 'detach for delete refused for now; retrying');
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private action(ctx: RequestContext, serverId: string, name: (typeof SERVER_ACTIONS)[keyof typeof SERVER_ACTIONS], startTime: string, details: Record<string, unknown>) {
    return { requestId: ctx.requestId, serverId, action: name.action, event: name.event, userId: ctx.userId, projectId: ctx.projectId, startTime, message: null, details };
  }

  private finish(ctx: RequestContext, serverId: string, result: 'Success' | 'Error', message: string | null): Promise<void> {
    return this.store.finishAction(ctx.requestId, serverId, result, message).catch((err: unknown) => {
      this.log.error({ err, requestId: ctx.requestId, serverId }, 'recording instance action failed');
    });
  }
}

/** The driver's view of an image record; an image that lacks what its kind needs is refused (400). */
export function spawnImage(image: ImageRecord): SpawnImage {
  if (image.kind === 'disk' && image.diskPath && image.diskFormat) return { kind: 'disk', diskPath: image.diskPath, diskFormat: image.diskFormat };
  if (image.kind === 'kernel' && image.kernelPath && image.ramdiskPath) {
    return { kind: 'kernel', kernelPath: image.kernelPath, ramdiskPath: image.ramdiskPath, cmdline: image.cmdline ?? '' };
  }
  throw errors.badRequest(`Image ${image.id} is not bootable: it lacks its ${image.kind === 'disk' ? 'disk' : 'kernel or ramdisk'}.`);
}
