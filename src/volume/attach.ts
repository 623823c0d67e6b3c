/**
 * Attach and detach, driven by the volume service (Cinder's attachment flow, with the volume
 * service in the driver's seat): compute's os-volume_attachments routes call it over HTTP
 * (rpc/volumeClient.ts, with the user's token); it asks compute whether the server can take the
 * volume, reserves the volume, asks its backend how the host reaches it (connection_info), has
 * compute plug it in (rpc/computeClient.ts, with the service's token) and records the
 * attachment. The lifecycle table (lifecycle.ts) decides whether the volume may move, and the
 * move is a conditional update on the version read.
 */
import type { RequestContext } from '../context.js';
import type { VolumeRecord, VolumeStore } from '../db/store.js';
import { errors, isServiceError, refusedUnacted } from '../errors.js';
import type { ComputeForVolumes } from '../rpc/computeClient.js';
import type { Connection } from '../rpc/shapes.js';
import type { InFlight } from './reconciler.js';
import type { VolumeBackend } from './backends/backend.js';
import { decide, isAttached, outcome, type Decision, type VolumeAction } from './lifecycle.js';
import type { AttachEncryption } from '../virt/driver.js';
import { currentTimings, withTimings } from '../util/timing.js';

/** An encrypted volume's format and passphrase for compute (never logged); undefined unencrypted. */
async function encryptionOf(store: VolumeStore, v: VolumeRecord): Promise<AttachEncryption | undefined> {
  if (!v.encryption) return undefined;
  const passphrase = await store.getVolumeEncryptionKey(v.id);
  if (passphrase === undefined) throw errors.internal('the encrypted volume has no stored passphrase', { final: true });
  return { format: v.encryption, passphrase };
}

/** Conditional updates lost to concurrent changes before giving up with VolumeBusy (409). */
const MAX_DECISIONS = 5;

/** Attach and detach of this service's volumes (see the module comment). */
export class VolumeAttachService {
  constructor(
    private readonly deps: { store: VolumeStore; backends: ReadonlyMap<string, VolumeBackend>; compute: ComputeForVolumes; inFlight: InFlight },
  ) {}

  /**
   * Moves `v` as the table says for `action`, conditionally; decides again if it changed.
   * `serverId`: for attach, the server asked for (an attached volume is refused as Nova does, see `attachRefusal`).
   */
  private async begin(
    action: VolumeAction,
    volumeId: string,
    v: VolumeRecord,
    patch: Partial<Pick<VolumeRecord, 'serverId' | 'serverProjectId'>> = {},
    serverId?: string,
  ): Promise<VolumeRecord> {
    // The caller's request timings, current now but not after an await (util/timing.ts).
    const timings = currentTimings();
    for (let attempt = 1; ; attempt++) {
      const d = decide(action, v);
      if (!d.ok) throw action === 'attach' && serverId !== undefined ? attachRefusal(d, v, serverId) : d.error;
      const guard = { status: [v.status], version: v.version, attached: isAttached(v) };
      if (await withTimings(timings, () => this.deps.store.updateVolume(volumeId, guard, { ...patch, status: d.to }))) return v;
      const now = await withTimings(timings, () => this.deps.store.getVolume(volumeId));
      if (!now) throw errors.volumeNotFound(volumeId);
      if (attempt >= MAX_DECISIONS) throw errors.volumeBusy(volumeId, now.status, action);
      v = now;
    }
  }

  /**
   * Attach `volumeId` (of `projectId`, the server's project) to `serverId`, on `device` (`vdc`)
   * if given; answers the attachment. A volume already attached is refused as Nova refuses it
   * (InvalidVolume, 400: "already attached" to this server, "already attached to instances" to
   * another; volumes are not multiattach). Throws VolumeNotFound (404), the table's other refusals (409), compute's refusals (see
   * ComputeForVolumes.checkConnect: before the volume is reserved, so they leave it untouched,
   * not even its version) and BackendFailed (500). An uncertain failure after compute was asked
   * leaves the volume `attaching` for the reconciler, which looks at the server and decides.
   */
  async attach(ctx: RequestContext, projectId: string, serverId: string, volumeId: string, device?: string): Promise<Connection> {
    const { store, compute } = this.deps;
    // The request's Server-Timing parts (util/timing.ts): each store and compute call after an
    // await re-enters them.
    const within = <T>(call: () => T): T => withTimings(ctx.timings, call);
    const v = await within(() => store.getVolume(volumeId));
    if (!v || v.projectId !== projectId) throw errors.volumeNotFound(volumeId);
    // Nova checks the volume before the server's device names: an attached volume is refused
    // first (400 InvalidVolume), whatever device was asked for.
    const d = decide('attach', v);
    if (!d.ok && d.refusal === 'attached') throw attachRefusal(d, v, serverId);
    await within(() => compute.checkConnect(projectId, serverId, volumeId, device));
    return this.deps.inFlight.run(volumeId, async () => {
      // The reservation names the server, so whoever finds the volume `attaching` later (the
      // reconciler, after a crash) knows where to look for the disk.
      await within(() => this.begin('attach', volumeId, v, { serverId, serverProjectId: projectId }, serverId));
      let asked = false;
      try {
        const backend = this.deps.backends.get(v.backend);
        if (!backend) throw errors.backendFailed(`volume type ${v.backend} is not configured on this service`);
        const connection = await within(() => backend.connection(volumeId));
        const encryption = await within(() => encryptionOf(store, v));
        asked = true;
        const att = await within(() => compute.connect(projectId, serverId, { ...connection, ...(device ? { device } : {}), ...(encryption ? { encryption } : {}) }));
        await within(() => store.updateVolume(volumeId, ['attaching'], { status: outcome('attach', 'done', true), device: att.value.device, attachedAt: new Date().toISOString() }));
        return att.value;
      } catch (err) {
        // Compute refused (for good, or this service's credential before acting): nothing is
        // plugged in. Otherwise (a timeout, the database failing after the plug) the disk may be
        // on the server: the reconciler looks and decides.
        if (!asked || refusedUnacted(err)) {
          await within(() => store.updateVolume(volumeId, ['attaching'], { status: outcome('attach', 'failed', false), serverId: null, serverProjectId: null, device: null }));
        }
        throw err;
      }
    });
  }

  /**
   * Detach `volumeId` from `serverId` (of `projectId`). A volume of ours attached there, or not
   * attached at all, is decided by the table; a disk we never attached (no record) or a volume
   * attached to another server is left to compute, which unplugs the former and answers
   * VolumeNotAttached (404) for the latter. A failed extend may have grown the storage past the
   * record: the detached volume's size is then what its storage has, measured.
   */
  async detach(ctx: RequestContext, projectId: string, serverId: string, volumeId: string): Promise<void> {
    const { store, compute } = this.deps;
    // The request's Server-Timing parts, re-entered after each await (as in `attach`).
    const within = <T>(call: () => T): T => withTimings(ctx.timings, call);
    const v = await within(() => store.getVolume(volumeId));
    const ours = v !== undefined && v.projectId === projectId && (v.serverId === serverId || v.serverId === null);
    if (!ours) {
      await within(() => compute.disconnect(projectId, serverId, volumeId));
      return;
    }
    return this.deps.inFlight.run(volumeId, async () => {
      const before = await within(() => this.begin('detach', volumeId, v));
      try {
        await within(() => compute.disconnect(projectId, serverId, volumeId));
      } catch (err) {
        // The disk is already gone from the server (unplugged behind our back, e.g. `virsh
        // detach-disk`): the detach is done, as Nova finishes one whose disk is not found. Without
        // this the volume would stay in-use forever: not detachable, deletable or extendable.
        const alreadyGone = isServiceError(err) && err.code === 'VolumeNotAttached' && before.serverId === serverId;
        if (!alreadyGone) {
          // Compute refused (for good, or this service's credential before acting): still
          // plugged in, back to the status it had. Otherwise the guest may still let go of it:
          // the reconciler looks and decides.
          if (refusedUnacted(err)) await within(() => store.updateVolume(volumeId, ['detaching'], { status: before.status }));
          throw err;
        }
      }
      const grown = before.status === 'error_extending' ? await within(() => this.storageBytes(before)) : undefined;
      await within(() => store.updateVolume(volumeId, ['detaching'], {
        status: 'available',
        serverId: null,
        serverProjectId: null,
        device: null,
        attachedAt: null,
        ...(grown !== undefined && grown > before.sizeBytes ? { sizeBytes: grown } : {}),
      }));
    });
  }

  private async storageBytes(v: VolumeRecord): Promise<number | undefined> {
    const backend = this.deps.backends.get(v.backend);
    return backend?.getBytes(v.id).catch(() => undefined);
  }
}

/**
 * Attach of a volume the table refuses: Nova's InvalidVolume (400) when the volume is attached
 * (compute/api.py `_check_volume_already_attached`): "already attached" to `serverId` itself,
 * "already attached to instances: …" to another; any other refusal as the table says.
 */
function attachRefusal(d: Extract<Decision, { ok: false }>, v: VolumeRecord, serverId: string) {
  if (d.refusal !== 'attached' || v.serverId === null) return d.error;
  return v.serverId === serverId ? errors.volumeAlreadyAttached(v.id) : errors.volumeAttachedToInstances(v.id, [v.serverId]);
}
