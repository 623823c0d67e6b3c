/**
 * Creating and deleting servers (Nova's compute API create/delete and the manager's
 * build_and_run_instance/terminate_instance, reduced to one host). The API answers at once (202,
 * 204) and the work goes on in the background, visible as Nova shows it:
 *
 *   create: vm_state `building`, task_state scheduling → block_device_mapping → networking →
 *           spawning → null with vm_state `active`; a failure leaves vm_state `error` with a fault
 *           (the driver leaves nothing behind). Recorded as the `create` action with its
 *           `compute__do_build_and_run_instance` event.
 *   delete: task_state `deleting`; every attached volume is detached through the volume service
 *           first (as Nova detaches on delete), so no volume is left in-use on a server that is
 *           gone; then the driver destroys the server and the record goes (GET: 404). Recorded as
 *           the `delete` action (`compute_terminate_instance`). A volume that cannot be detached
 *           stops the delete: the server stays, idle again, and the action says why.
 *
 * A delete during a build is allowed (as in Nova): the build stops at its next step, or, if the
 * driver is already spawning, the delete waits for it and then destroys what it made.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { RequestContext } from '../context.js';
import type { ComputeStore, FlavorRecord, ImageRecord, ServerRecord } from '../db/store.js';
import { errors, isServiceError } from '../errors.js';
import type { VolumesForCompute } from '../rpc/volumeClient.js';
import type { SpawnImage, SpawnSpec } from '../virt/driver.js';
import type { ComputeRpc } from './rpc.js';
import { DELETING } from './tasks.js';

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

/** What ServerLifecycle is built from: the store, the hosts, the host it builds on, and the volume service (detach on delete; absent: none to detach). */
export interface ServerLifecycleOptions {
  store: ComputeStore;
  rpc: ComputeRpc;
  logger: Logger;
  /** The compute host new servers are built on (one host per process today). */
  host: string;
  volumes?: VolumesForCompute;
}

/** See the module comment. */
export class ServerLifecycle {
  private readonly store: ComputeStore;
  private readonly rpc: ComputeRpc;
  private readonly log: Logger;
  private readonly host: string;
  private readonly volumes: VolumesForCompute | undefined;
  /** Builds under way, by server id (a delete waits for its server's). */
  private readonly builds = new Map<string, Promise<void>>();
  /** Every background job under way (builds and deletes), for `idle`. */
  private readonly jobs = new Set<Promise<void>>();

  constructor(opts: ServerLifecycleOptions) {
    this.store = opts.store;
    this.rpc = opts.rpc;
    this.log = opts.logger;
    this.host = opts.host;
    this.volumes = opts.volumes;
  }

  /**
   * Checks the request, records the server (`building`, `scheduling`) and the `create` action,
   * and builds it in the background. Throws BadRequest (400) for an unknown image ("Can not find
   * requested image") or flavor ("Invalid flavorRef provided."), or a flavor too small for the
   * image, and CreateServerNotSupported (501) when the host's driver cannot create servers.
   */
  async create(ctx: RequestContext, req: CreateServerRequest): Promise<CreatedServer> {
    const image = await this.store.getImage(req.imageRef);
    if (!image) throw errors.badRequest('Can not find requested image');
    const flavor = await this.store.getFlavor(req.flavorRef);
    if (!flavor) throw errors.badRequest('Invalid flavorRef provided.');
    if (flavor.ramMb < image.minRamMb) throw errors.badRequest("Flavor's memory is too small for requested image.");
    if (flavor.diskGb > 0 && flavor.diskGb < image.minDiskGb) throw errors.badRequest("Flavor's disk is too small for requested image.");
    const boot = spawnImage(image);
    const caps = await this.rpc.capabilities(this.host);
    if (!caps.capabilities.spawnServer) throw errors.createServerNotSupported(caps.driver);
    const id = randomUUID();
    const createdAt = new Date().toISOString();
    const record = { id, name: req.name, projectId: ctx.projectId, userId: ctx.userId, createdAt, imageRef: image.id, flavorRef: flavor.id, metadata: req.metadata };
    if (!(await this.store.createServer(this.host, { ...record, taskState: BUILD_TASK_STATES[0] }))) throw errors.internal('A new server id was already taken.');
    await this.store.startAction(this.action(ctx, id, SERVER_ACTIONS.create, createdAt, { image: image.id, flavor: flavor.id }));
    const spec: SpawnSpec = { id, name: req.name, projectId: ctx.projectId, userId: ctx.userId, image: boot, vcpus: flavor.vcpus, ramMb: flavor.ramMb, rootDiskGb: flavor.diskGb };
    const build = this.track(this.build(ctx, spec, flavor));
    this.builds.set(id, build);
    void build.finally(() => this.builds.delete(id));
    const server = await this.store.getServer(id);
    if (!server) throw errors.instanceNotFound(id);
    // Nova's admin password: generated, shown once, not kept (no guest agent sets it here).
    return { server, adminPass: randomBytes(9).toString('base64url') };
  }

  /**
   * Starts deleting `server` (task_state `deleting`, the `delete` action) and finishes in the
   * background (see the module comment). `token`: the caller's, which the volume service's
   * detaches are made with (as Nova calls Cinder with the user's token). Throws InstanceBusy (409)
   * while another task than a build is under way (an attach, a detach, a delete), and
   * InstanceInvalidState (409) for a server this API did not create (a domain found on the host).
   */
  async delete(ctx: RequestContext, server: ServerRecord, token: string): Promise<void> {
    // A domain found on the host (the operator's, or the lab's) is never destroyed from the API.
    if (server.createdAt === undefined) throw errors.instanceNotOurs(server.id);
    const from = server.taskState;
    if ((from !== null && !BUILDING.has(from)) || !(await this.store.setTaskState(server.id, DELETING, from))) {
      const now = await this.store.getServer(server.id);
      if (!now) throw errors.instanceNotFound(server.id);
      throw errors.instanceBusy(server.id, now.taskState ?? 'unknown', 'delete');
    }
    await this.store.startAction(this.action(ctx, server.id, SERVER_ACTIONS.delete, new Date().toISOString(), {}));
    void this.track(this.terminate(ctx, server, token));
  }

  /** Resolves when every build and delete under way has ended (tests; a graceful stop). */
  async idle(): Promise<void> {
    while (this.jobs.size > 0) await Promise.allSettled([...this.jobs]);
  }

  /**
   * At start-up, before anything of this process runs: a server left `building` by a process
   * that died fails its build (vm_state `error`, as Nova's init_host does), and a delete left
   * half done is given up (task_state null; the user deletes again). Answers the ids changed.
   */
  async recover(host: string): Promise<string[]> {
    const changed: string[] = [];
    const created = new Date().toISOString();
    for (const s of await this.store.listServers()) {
      if (s.host !== host) continue;
      if (s.state === 'building' && (s.taskState === null || BUILDING.has(s.taskState))) {
        const fault = { code: 500, message: 'The compute service restarted while the server was building.', created };
        if (await this.store.setServerState(s.id, { state: 'error', taskState: null, fault }, s.taskState)) changed.push(s.id);
      } else if (s.taskState === DELETING && (await this.store.setTaskState(s.id, null, DELETING))) {
        changed.push(s.id);
      }
    }
    if (changed.length) this.log.warn({ servers: changed }, 'recovered servers an earlier process left building or deleting');
    return changed;
  }

  private track(job: Promise<void>): Promise<void> {
    const p = job.catch((err: unknown) => this.log.error({ err }, 'server job failed'));
    this.jobs.add(p);
    void p.finally(() => this.jobs.delete(p));
    return p;
  }

  /** The build: each task state in turn (each step only if nobody moved the task since), then spawn. */
  private async build(ctx: RequestContext, spec: SpawnSpec, flavor: FlavorRecord): Promise<void> {
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
      const spawned = await this.rpc.spawn(this.host, spec);
      // A delete may have taken the task meanwhile: it destroys what was made (it waits for this build).
      if (!(await this.store.setServerState(id, { state: 'active', taskState: null }, at))) {
        await this.finish(ctx, id, 'Error', 'The server was deleted while it was building.');
        return;
      }
      this.log.info({ serverId: id, requestId: ctx.requestId, vcpus: flavor.vcpus, ramMb: flavor.ramMb, state: spawned.state }, 'server built');
      await this.rpc.syncServer(this.host, id).catch(() => undefined);
      await this.finish(ctx, id, 'Success', null);
    } catch (err) {
      const message = isServiceError(err) ? err.message : 'An unexpected error occurred.';
      const code = isServiceError(err) ? err.status : 500;
      this.log.error({ err, serverId: id, requestId: ctx.requestId }, 'server build failed');
      await this.store.setServerState(id, { state: 'error', taskState: null, fault: { code, message, created: new Date().toISOString() } }, at);
      await this.finish(ctx, id, 'Error', message);
    }
  }

  /** The delete: wait for a build, detach every volume through the volume service, destroy, forget. */
  private async terminate(ctx: RequestContext, server: ServerRecord, token: string): Promise<void> {
    const id = server.id;
    try {
      await this.builds.get(id);
      const fresh = (await this.rpc.syncServer(server.host, id).catch(() => undefined)) ?? (await this.store.getServer(id)) ?? server;
      for (const a of fresh.attachments) {
        if (!this.volumes) break; // no volume service: the driver unplugs the disks with the server
        await this.volumes.detach(token, fresh.projectId, id, a.volumeId);
        this.log.info({ serverId: id, volumeId: a.volumeId, requestId: ctx.requestId }, 'volume detached for delete');
      }
      await this.rpc.destroy(server.host, id);
      await this.store.deleteServer(id);
      await this.finish(ctx, id, 'Success', null);
      this.log.info({ serverId: id, requestId: ctx.requestId }, 'server deleted');
    } catch (err) {
      this.log.error({ err, serverId: id, requestId: ctx.requestId }, 'server delete failed');
      await this.store.setTaskState(id, null, DELETING).catch(() => false);
      await this.finish(ctx, id, 'Error', isServiceError(err) ? err.message : 'An unexpected error occurred.');
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
