/**
 * The libvirt driver's view of one attached disk: finding it (domain by UUID, disk by `<serial>`),
 * its three sizes (live guest size through QEMU, host size through the host's storage, the
 * largest file its filesystem holds), and the classification of a failed call on it (look again
 * at the domain, the disk and the host first, then libvirt's error number; see failures.ts).
 * Shared by the driver's read/resize path (driver.ts) and its hot-plug path (hotplug.ts).
 */
import { dirname } from 'node:path';
import { errnoOf } from '../../util/errno.js';
import { errors, isServiceError, type ServiceError } from '../../errors.js';
import type { ServerState } from '../driver.js';
import { volumeDisks, type DomainDisk } from './domxml.js';
import type { Guest, LiveSizeMethod } from './guest.js';
import type { Host } from './host.js';
import type { Logger } from './remote/client.js';
import { LibvirtConnectionError, LibvirtError, LibvirtProtocolError, LibvirtTimeoutError, VirErrorCode } from './remote/errors.js';
import { hostFailed, type HostStorage } from './storage.js';
import { classifyLibvirtError, type FailureContext } from './failures.js';
import { readLuksPayloadOffset } from '../../host/luks.js';
import { currentTimings, withTimings } from '../../util/timing.js';

/** States with a running QEMU: only there is a disk's guest size live, and can it be resized. */
export const RUNNING_STATES: ReadonlySet<ServerState> = new Set(['active', 'paused']);

/** What `DomainDisks` works with: the libvirt host, the host's storage tools, and its settings. */
export interface DomainDisksOptions {
  host: Host;
  storage: HostStorage;
  log: Logger;
  liveSizeMethod: LiveSizeMethod;
  /** The largest file a directory's filesystem holds, in bytes (src/util/fsLimits.ts). */
  maxFileBytes: (dir: string) => Promise<number>;
}

/**
 * Lookup, sizing and failure classification for the disks of libvirt domains. Every method
 * throws catalogue errors only (InstanceNotFound, VolumeNotAttached, InstanceStopped,
 * InstanceInvalidState, HostSizeTooSmall, SizeLimitExceeded, DriverFailed, HypervisorUnreachable).
 */
export class DomainDisks {
  readonly host: Host;
  readonly storage: HostStorage;
  readonly log: Logger;
  private readonly liveSizeMethod: LiveSizeMethod;
  private readonly maxFileBytes: (dir: string) => Promise<number>;

  constructor(opts: DomainDisksOptions) {
    this.host = opts.host;
    this.storage = opts.storage;
    this.log = opts.log;
    this.liveSizeMethod = opts.liveSizeMethod;
    this.maxFileBytes = opts.maxFileBytes;
  }

  /** The domain with UUID `serverId`. Throws InstanceNotFound, HypervisorUnreachable, DriverFailed. */
  async lookup(serverId: string): Promise<Guest> {
    try {
      return await this.host.lookup(serverId);
    } catch (err) {
      throw this.mapError(err, { serverId, action: 'look up instance' });
    }
  }

  /** The guest and the disk carrying `volumeId`, from cached XML (refetched once on a miss). */
  async resolve(serverId: string, volumeId: string, opts: { fresh?: boolean } = {}): Promise<{ guest: Guest; disk: DomainDisk }> {
    // The request's timings (current at the call, not after an await: util/timing.ts) for the
    // libvirt calls made after the lookup.
    const timings = currentTimings();
    const guest = await this.lookup(serverId);
    try {
      let { info, fromCache } = await withTimings(timings, () => guest.info(opts));
      let disk = volumeDisks(info).find((d) => d.serial === volumeId);
      if (!disk && fromCache) {
        ({ info, fromCache } = await withTimings(timings, () => guest.info({ fresh: true })));
        disk = volumeDisks(info).find((d) => d.serial === volumeId);
      }
      if (!disk) throw errors.volumeNotAttached(volumeId, serverId);
      return { guest, disk };
    } catch (err) {
      throw this.mapError(err, { serverId, volumeId, action: 'read the domain' });
    }
  }

  /** The guest size of `disk` in bytes, read live from QEMU (raw libvirt errors: callers classify). */
  liveBytes(guest: Guest, disk: DomainDisk): Promise<number> {
    return guest.liveBytes(disk.target, this.liveSizeMethod, {
      ...(disk.alias !== undefined ? { alias: disk.alias } : {}),
      ...(disk.sourceIndex !== undefined ? { sourceIndex: disk.sourceIndex } : {}),
    });
  }

  /**
   * The live size, after making sure the domain runs: state and size are read in parallel and the
   * state decides first (libvirt answers GetBlockInfo from the definition of a stopped domain,
   * which is not what any guest sees).
   */
  async liveBytesOfRunning(guest: Guest, disk: DomainDisk, serverId: string, volumeId: string, action: string): Promise<number> {
    const [st, live] = await Promise.allSettled([guest.state(), this.liveBytes(guest, disk)]);
    try {
      if (st.status === 'rejected') throw st.reason;
      if (!RUNNING_STATES.has(st.value.state)) throw errors.instanceInvalidState(serverId, st.value.state, action);
      if (live.status === 'rejected') throw live.reason;
      return live.value;
    } catch (err) {
      throw await this.reobserve(err, guest, { serverId, volumeId, action, live: true, diskExpected: true });
    }
  }

  /**
   * The host size of `disk` in bytes, measured now: block device (sysfs), file (size or qcow2
   * virtual size), iSCSI LUN (READ CAPACITY at the portal). Throws DriverFailed.
   */
  async hostBytes(disk: DomainDisk): Promise<number> {
    const what = 'read the host size of the volume';
    try {
      switch (disk.kind) {
        case 'block':
          if (!disk.source) break;
          return await this.storage.blockDeviceBytes(disk.source);
        case 'file':
          if (!disk.source) break;
          return await this.storage.fileBytes(disk.source, disk.format === 'qcow2' ? 'qcow2' : 'raw');
        case 'network':
          if (disk.protocol !== 'iscsi' || !disk.source) {
            throw errors.driverFailed(`cannot ${what}: the host size of ${disk.protocol ?? 'unknown'} network disks is not supported`);
          }
          try {
            return await this.storage.iscsiLunBytes(disk.source, disk.portal);
          } catch (err) {
            // An initiator's login fails while the backend re-adds the LUN (~25 ms): uncertain.
            throw hostFailed(what, err, { detail: disk.source, transientExit: true });
          }
      }
      throw errors.driverFailed(`cannot ${what}: disk ${disk.target} has no source`);
    } catch (err) {
      throw hostFailed(what, err, { detail: disk.source ?? disk.target });
    }
  }

  /**
   * Bytes of an encrypted (LUKS) disk's header before what the guest sees, read from the header
   * (file, block: on the host, src/host/luks.ts; an iSCSI LUN: over iSCSI, storage.ts); 0 for a
   * disk without encryption. `strict` false (the default: a pre-check, QEMU decides anyway):
   * an unreadable header counts as 0; true: it throws DriverFailed.
   */
  async payloadOffset(disk: DomainDisk, opts: { strict?: boolean } = {}): Promise<number> {
    if (!disk.encryption || !disk.source) return 0;
    const what = 'read the encryption header of the volume';
    try {
      const offset =
        disk.kind === 'network'
          ? disk.protocol === 'iscsi'
            ? await this.storage.iscsiLuksPayloadOffset(disk.source, disk.portal)
            : undefined
          : await readLuksPayloadOffset(disk.source);
      if (offset === undefined) throw errors.driverFailed(`cannot ${what}: the encrypted disk ${disk.target} has no LUKS header`, { detail: disk.source });
      return offset;
    } catch (err) {
      if (!opts.strict) return 0;
      throw hostFailed(what, err, { detail: disk.source });
    }
  }

  /** The largest raw file disk's filesystem holds, or undefined (not a raw file, or unmeasurable). */
  async fileLimit(disk: DomainDisk): Promise<number | undefined> {
    const raw = disk.format === 'raw' || disk.driverType === undefined;
    if (disk.kind !== 'file' || !disk.source || !raw) return undefined;
    try {
      return await this.maxFileBytes(dirname(disk.source));
    } catch (err) {
      // A directory we cannot probe (no write access on a share): QEMU decides, and an EFBIG
      // is re-measured after the fact.
      this.log.warn({ device: disk.target, err: (err as Error)?.message }, 'cannot measure the largest file of a disk');
      return undefined;
    }
  }

  /** SizeLimitExceeded (400) for a raw file disk asked past what its filesystem holds. */
  tooLarge(volumeId: string, bytes: number, limit: number, disk: DomainDisk): ServiceError {
    return errors.sizeLimitExceeded(volumeId, bytes, limit, `the filesystem holding disk ${disk.target}`);
  }

  /**
   * A libvirt call on an attached volume failed: look again at what it may be about, then
   * classify the rest by error number (LIBVIRT_ERRORS). In order:
   * 1. the domain is gone → InstanceNotFound;
   * 2. the domain is not running (re-read its state) → InstanceStopped / InstanceInvalidState;
   * 3. the disk is no longer attached (re-read the domain XML) → VolumeNotAttached;
   * 4. for a resize: the host size, re-measured, is below the request → HostSizeTooSmall; the
   *    file's filesystem, re-measured, cannot hold the request (EFBIG from QEMU) → SizeLimitExceeded;
   * 5. otherwise the table's classification.
   */
  async reobserve(err: unknown, guest: Guest, ctx: FailureContext): Promise<ServiceError> {
    if (isServiceError(err)) return err;
    const timings = currentTimings();
    if (!(err instanceof LibvirtError)) return this.mapError(err, ctx);
    guest.invalidate();
    if (err.code === VirErrorCode.NO_DOMAIN) {
      this.host.forget(ctx.serverId);
      return errors.instanceNotFound(ctx.serverId);
    }
    if (ctx.live) {
      const st = await guest.state().catch(() => undefined);
      if (st && !RUNNING_STATES.has(st.state)) return errors.instanceInvalidState(ctx.serverId, st.state, ctx.action);
    }
    if (ctx.diskExpected) {
      const info = await withTimings(timings, () => guest.info({ fresh: true })).catch(() => undefined);
      if (info && !volumeDisks(info.info).some((d) => d.serial === ctx.volumeId)) return errors.volumeNotAttached(ctx.volumeId, ctx.serverId);
    }
    if (ctx.resize) {
      const { disk, bytes } = ctx.resize;
      if (disk.kind !== 'file') {
        const host = await this.hostBytes(disk).catch(() => undefined);
        const offset = host === undefined ? 0 : await this.payloadOffset(disk);
        if (host !== undefined && host - offset < bytes) return errors.hostSizeTooSmallFor(ctx.volumeId, bytes, host, offset);
      } else {
        const limit = await this.fileLimit(disk);
        if (limit !== undefined && bytes > limit) return this.tooLarge(ctx.volumeId, bytes, limit, disk);
      }
    }
    return this.mapError(err, ctx);
  }

  /** Classifies a failure without looking again: libvirt's by number, the transport's by kind. */
  mapError(err: unknown, ctx: { serverId?: string; volumeId?: string; action: string }): ServiceError {
    if (isServiceError(err)) return err;
    if (err instanceof LibvirtConnectionError) return errors.hypervisorUnreachable(err.uri, err.reason);
    if (err instanceof LibvirtTimeoutError) {
      // The call may still complete on libvirtd's side: uncertain.
      return errors.driverFailed(`cannot ${ctx.action}: ${err.reason}`, { final: false, cause: err, detail: err.message });
    }
    if (err instanceof LibvirtError) {
      if (err.code === VirErrorCode.NO_DOMAIN && ctx.serverId !== undefined) {
        this.host.forget(ctx.serverId);
        return errors.instanceNotFound(ctx.serverId);
      }
      const c = classifyLibvirtError(err.code);
      this.log.warn({ serverId: ctx.serverId, volumeId: ctx.volumeId, code: err.code, domain: err.domain, procedure: err.procedure, final: c.final, reason: err.message }, 'libvirt call failed');
      return errors.driverFailed(`cannot ${ctx.action}: ${c.reason} (${c.name})`, { final: c.final, cause: err, detail: `${err.procedure}: ${err.message}` });
    }
    if (err instanceof LibvirtProtocolError) {
      return errors.driverFailed(`cannot ${ctx.action}: libvirtd sent a reply this driver cannot read`, { final: true, cause: err, detail: err.message });
    }
    this.log.error({ serverId: ctx.serverId, volumeId: ctx.volumeId, err }, 'unexpected libvirt driver failure');
    if (errnoOf(err) !== undefined) return hostFailed(ctx.action, err);
    return errors.driverFailed(`cannot ${ctx.action}: unexpected failure in the libvirt driver`, { final: true, cause: err, detail: (err as Error)?.message ?? String(err) });
  }
}

