/**
 * Nova's server external events (nova/api/openstack/compute/server_external_events.py, and
 * `external_instance_event` in compute/api.py and compute/manager.py): another service tells
 * compute that something happened to a server. Every event is answered on its own (200, or
 * failed with 404 / 400 / 422); of the accepted ones only `volume-extended` acts here, the
 * network-* names are accepted and ignored (no networking here).
 *
 * `volume-extended` (what Cinder sends once it grew an attached volume; `tag` = the volume id)
 * is Nova's compute `extend_volume`: the API records an `extend_volume` instance action in the
 * caller's name (Cinder's service user) before it answers, and the work runs afterwards
 * (ComputeManager.extendToHostSize, under the volume's lock): rescan the volume, measure the
 * size the host sees, grow the guest's view to it, never smaller. The action's one event,
 * `compute_extend_volume`, gets its finish time and result (Success, or Error with the reason)
 * when that is done; `details.volumes` says per volume what was done and why.
 *
 * Never lost: the action is on disk before the caller is answered. If the process dies before
 * the action is finished, it stays unfinished (finish_time null), and the next start of compute
 * on that host runs it again (`resume`): the work is idempotent (a rescan, then growing to what
 * the host sees, or nothing), so running it twice is harmless, and the action then finishes
 * with `details.resumed: true`.
 *
 * NOTE: `volume-extended` never grows the guest's filesystem, whatever the volume's metadata
 * `online_extend:grow_fs` says: that opt-in is the volume service's (Cinder's metadata, which
 * compute cannot read without calling Cinder back, and Nova's event carries no such flag), and
 * an event from a real Cinder extended the volume elsewhere, outside our workflow that records
 * the outcome. The block device grows; the filesystem is the guest owner's, as in Nova. Our own
 * volume service grows it in its extend workflow (the grow_fs step) when asked.
 */
import type { Logger } from 'pino';
import type { ComputeStore, InstanceActionRecord, ServerRecord } from '../db/store.js';
import { isServiceError, unexpectedError } from '../errors.js';
import type { HostSizeExtend } from './manager.js';
import type { ComputeRpc } from './rpc.js';
import { withTimings, type RequestTimings } from '../util/timing.js';

/** The event that acts: Cinder grew the attached volume named by `tag`. */
export const VOLUME_EXTENDED = 'volume-extended';
/** Event names that must carry a `tag` (Nova's TAG_REQUIRED, up to the versions served). */
const TAG_REQUIRED: ReadonlySet<string> = new Set([VOLUME_EXTENDED]);
/** Nova's instance action and event for `volume-extended`. */
export const EXTEND_VOLUME_ACTION = { action: 'extend_volume', event: 'compute_extend_volume' } as const;

/** One event as the client sent it (Nova's InstanceExternalEvent). */
export interface ExternalEvent {
  name: string;
  server_uuid: string;
  status?: 'failed' | 'completed' | 'in-progress';
  tag?: string;
}

/** The event answered: as sent, with its `status` and `code` set (Nova's per-event answer). */
export interface ExternalEventAnswer extends ExternalEvent {
  status: 'failed' | 'completed';
  code: 200 | 400 | 404 | 422;
}

/** Who sent the events: the action is recorded in their name, under their request id. */
export interface EventCaller {
  requestId: string;
  userId: string;
  projectId: string;
  /** The request's Server-Timing parts, as RequestContext.timings: the lookups and the actions' records add their time. */
  timings?: RequestTimings;
}

/** What one volume of a `volume-extended` action came to, as `details.volumes` records it (sizes in bytes). */
export type VolumeOutcome = { volume_id: string } & (VolumeDone | { outcome: 'error'; error_code: string; message: string });

/** A volume's outcome when the host's work did not fail (HostSizeExtend, as stored). */
type VolumeDone =
  | { outcome: 'grown'; host_bytes: number; guest_bytes_before: number; bytes: number }
  | { outcome: 'unchanged'; host_bytes: number; guest_bytes: number }
  | { outcome: 'offline'; host_bytes: number }
  | { outcome: 'not_attached' };

/** See the module comment. */
export class ServerExternalEvents {
  /** Work under way, so tests and a shutdown can wait for it (`settled`). */
  private readonly running = new Set<Promise<void>>();

  constructor(
    private readonly deps: {
      store: ComputeStore;
      rpc: ComputeRpc;
      log: Logger;
      /** The server of any project, or undefined (the API's lookup, including a miss looked up on the host). */
      findServer: (serverId: string) => Promise<ServerRecord | undefined>;
    },
  ) {}

  /**
   * Answers every event (in order) and starts the work of the accepted `volume-extended` ones:
   * one `extend_volume` action per server, recorded before this resolves, covering the volumes
   * named for it in this request (each once). Throws only if the store refuses the action
   * (then nothing was started and the caller gets the error, so the event is not lost silently).
   */
  async accept(caller: EventCaller, events: readonly ExternalEvent[]): Promise<ExternalEventAnswer[]> {
    const { log } = this.deps;
    const ids = [...new Set(events.map((e) => e.server_uuid))];
    const found = await Promise.all(ids.map(async (id) => [id, await this.deps.findServer(id)] as const));
    const servers = new Map(found);
    const extend = new Map<string, { server: ServerRecord; volumeIds: string[] }>();
    const answers = events.map((e): ExternalEventAnswer => {
      const server = servers.get(e.server_uuid);
      let code: ExternalEventAnswer['code'];
      if (!server) code = 404;
      else if (TAG_REQUIRED.has(e.name) && e.tag === undefined) code = 400;
      else if (!server.host) code = 422;
      else code = 200;
      if (code !== 200) {
        log.debug({ event: e.name, tag: e.tag, serverId: e.server_uuid, code, requestId: caller.requestId }, 'external event dropped');
      } else if (e.name === VOLUME_EXTENDED) {
        const job = extend.get(server!.id) ?? { server: server!, volumeIds: [] };
        if (!job.volumeIds.includes(e.tag!)) job.volumeIds.push(e.tag!);
        extend.set(server!.id, job);
      } else {
        log.debug({ event: e.name, tag: e.tag, serverId: e.server_uuid, requestId: caller.requestId }, 'external event accepted and ignored');
      }
      return { ...e, status: code === 200 ? 'completed' : 'failed', code };
    });
    for (const { server, volumeIds } of extend.values()) {
      // Part of the request (util/timing.ts: nothing is current after the lookups' await); the
      // work tracked below is not: it runs after the answer.
      await withTimings(caller.timings, () => this.deps.store.startAction({
        requestId: caller.requestId,
        serverId: server.id,
        ...EXTEND_VOLUME_ACTION,
        userId: caller.userId,
        projectId: caller.projectId,
        startTime: new Date().toISOString(),
        message: null,
        details: { trigger: VOLUME_EXTENDED, volume_ids: volumeIds },
      }));
      log.info({ serverId: server.id, volumeIds, host: server.host, requestId: caller.requestId }, 'volume-extended event accepted');
      this.track(this.run(caller.requestId, server, volumeIds, false));
    }
    return answers;
  }

  /**
   * At start-up of compute on `host`: run again every `volume-extended` action a previous
   * process left unfinished on a server of this host (see the module comment). An action whose
   * server no longer exists is finished as Error. Answers the request ids taken up; the work
   * runs in the background.
   */
  async resume(host: string): Promise<string[]> {
    const { store, log } = this.deps;
    const taken: string[] = [];
    for (const a of await store.listUnfinishedActions(EXTEND_VOLUME_ACTION.action)) {
      const volumeIds = volumesOf(a);
      if (!volumeIds) continue;
      const server = await store.getServer(a.serverId);
      if (!server) {
        await this.finish(a.requestId, a.serverId, 'Error', `Instance ${a.serverId} could not be found.`, { ...a.details, resumed: true, volumes: [] });
        continue;
      }
      if (server.host !== host) continue;
      taken.push(a.requestId);
      this.track(this.run(a.requestId, server, volumeIds, true));
    }
    if (taken.length) log.warn({ requestIds: taken, host }, 'resuming volume-extended events an earlier process left unfinished');
    return taken;
  }

  /** Resolves once no work started here is under way (whatever its outcome). */
  async settled(): Promise<void> {
    while (this.running.size) await Promise.all([...this.running]);
  }

  private track(work: Promise<void>): void {
    this.running.add(work);
    void work.finally(() => this.running.delete(work));
  }

  /** The compute side of the action: each volume in turn, then the action's finish. Never rejects. */
  private async run(requestId: string, server: ServerRecord, volumeIds: readonly string[], resumed: boolean): Promise<void> {
    const { rpc, log } = this.deps;
    const volumes: VolumeOutcome[] = [];
    for (const volumeId of volumeIds) {
      try {
        const done = await rpc.extendToHostSize(server.host, server.id, volumeId);
        if (done.outcome === 'not_attached') log.warn({ serverId: server.id, volumeId, requestId }, 'volume-extended event for a volume not attached to the server: nothing changed');
        else log.info({ serverId: server.id, volumeId, requestId, ...done }, 'volume-extended event handled');
        volumes.push({ volume_id: volumeId, ...outcomeDetails(done) });
      } catch (err) {
        const e = unexpectedError(err);
        if (!isServiceError(err)) log.error({ err, serverId: server.id, volumeId, requestId }, 'volume-extended event failed');
        else log.warn({ code: e.code, detail: e.detail, serverId: server.id, volumeId, requestId }, 'volume-extended event failed');
        volumes.push({ volume_id: volumeId, outcome: 'error', error_code: e.code, message: e.message });
      }
    }
    const failed = volumes.filter((v): v is Extract<VolumeOutcome, { outcome: 'error' }> => v.outcome === 'error');
    const message = failed.length ? failed.map((v) => v.message).join(' ') : volumes.map((v) => describe(v, server.id)).join(' ');
    const details = { trigger: VOLUME_EXTENDED, volume_ids: volumeIds, volumes, ...(resumed ? { resumed: true } : {}) };
    await this.finish(requestId, server.id, failed.length ? 'Error' : 'Success', message, details);
  }

  private finish(requestId: string, serverId: string, result: 'Success' | 'Error', message: string, details: Record<string, unknown>): Promise<void> {
    return this.deps.store.finishAction(requestId, serverId, result, message, details).catch((err: unknown) => {
      // Left unfinished: the next start runs it again (idempotent), so it is not lost.
      this.deps.log.error({ err, requestId, serverId }, 'recording instance action failed');
    });
  }
}

/** The volume ids of an unfinished `volume-extended` action, or undefined for any other (e.g. the spec's assist_extend). */
function volumesOf(a: InstanceActionRecord): string[] | undefined {
  const ids = a.details.volume_ids;
  if (a.details.trigger !== VOLUME_EXTENDED || !Array.isArray(ids) || !ids.every((x) => typeof x === 'string')) return undefined;
  return ids as string[];
}

function outcomeDetails(done: HostSizeExtend): VolumeDone {
  switch (done.outcome) {
    case 'grown':
      return { outcome: 'grown', host_bytes: done.hostBytes, guest_bytes_before: done.guestBytes, bytes: done.bytes };
    case 'unchanged':
      return { outcome: 'unchanged', host_bytes: done.hostBytes, guest_bytes: done.guestBytes };
    case 'offline':
      return { outcome: 'offline', host_bytes: done.hostBytes };
    case 'not_attached':
      return { outcome: 'not_attached' };
  }
}

/** The action's message for a volume that did not fail: what was done, or why nothing was. */
function describe(v: VolumeOutcome, serverId: string): string {
  switch (v.outcome) {
    case 'grown':
      return `Volume ${v.volume_id}: the guest now sees ${v.bytes} bytes (was ${v.guest_bytes_before}).`;
    case 'unchanged':
      return `Volume ${v.volume_id}: the host sees ${v.host_bytes} bytes, the guest already ${v.guest_bytes}; nothing changed (a volume is never shrunk).`;
    case 'offline':
      return `Volume ${v.volume_id}: instance ${serverId} is shut off; the host sees ${v.host_bytes} bytes, which the guest gets when it starts.`;
    case 'not_attached':
      return `Volume ${v.volume_id} is not attached to instance ${serverId}; nothing changed.`;
    case 'error':
      return v.message;
  }
}
