/**
 * LibvirtDriver: the VirtDriver contract (../driver.ts) on a libvirt/QEMU host, speaking
 * libvirt's remote protocol directly over its unix socket (no virsh, no native binding).
 *
 * - A domain is a server (UUID = server id); a `<disk>` with a `<serial>` is an attached volume
 *   (serial = volume id), as Nova attaches them. The project comes from our domain metadata
 *   (`<oe:project xmlns:oe="https://online-extend.dev/xmlns/1">`), else `defaultProjectId`.
 * - Live guest size: QMP `query-block` through virDomainQemuMonitorCommand (the fastest correct
 *   read). Measured here with this client on one persistent connection against a booted Linux
 *   guest under TCG (libvirt 9.0, QEMU 7.2), medians of ~1000 interleaved calls, p10–p90:
 *     bare round trip (virDomainGetState)         0.32 ms  [0.21–0.95]
 *     virDomainGetXMLDesc                         0.37 ms  [0.24–0.97]
 *     virDomainBlockResize                        2.9  ms  [1.9–6.6]
 *     QMP query-block via QemuMonitorCommand      2.9  ms  [2.4–8.2]   <- chosen
 *     QMP query-named-block-nodes flat=true       3.4  ms  [2.8–8.5]
 *     virDomainListGetStats(BLOCK)                4.7  ms  [4.0–8.8]
 *     virDomainGetBlockInfo                       4.8  ms  [4.0–9.1]
 *   (python3-libvirt measured 2.9 ms for query-block and 6.4 ms for blockInfo on the same kind of
 *   host.) All of them read QEMU's current view: right after a resize they return the new size.
 *   query-block costs libvirt's one-time "custom-monitor" taint warning on the domain;
 *   `liveSizeMethod: 'blockinfo'` selects the documented API instead.
 * - Parsed domain XML is cached per domain id (a restart gives a new id) for a few seconds and
 *   dropped on attach/detach and on any miss, so the hot path is lookup + state + read + resize
 *   + read.
 */
import { KeyedMutex } from '../../util/keyedMutex.js';
import { errors, isServiceError, type ServiceError } from '../../errors.js';
import type {
  ExtendOptions, AttachSpec, DriverCapabilities, DriverServer, VirtDriver } from '../driver.js';
import { buildDiskXml, nextFreeDevice, toDriverDisk, volumeDisks, type DomainDisk, type DomainInfo } from './domxml.js';
import type { Guest, LiveSizeMethod } from './guest.js';
import { Host } from './host.js';
import { LibvirtConnectionError, LibvirtError, LibvirtTimeoutError, VirErrorCode } from './remote/errors.js';
import type { Logger } from './remote/client.js';
import { HostStorage, type RunCommand } from './storage.js';

export interface LibvirtDriverOptions {
  /** libvirt URI: `qemu:///system` (default) or `qemu+unix:///system?socket=PATH`. */
  uri?: string;
  /** Project of domains without our project metadata. */
  defaultProjectId?: string;
  /** sysfs mount point (tests use a fake tree). */
  sysfsRoot?: string;
  logger?: Logger;
  /** Per-call timeout towards libvirtd (default 30 s: QEMU may be slow under load). */
  callTimeoutMs?: number;
  /** How long detachVolume waits for the guest to release the disk (default 20 s). */
  detachTimeoutMs?: number;
  liveSizeMethod?: LiveSizeMethod;
  /** How long cached domain XML is trusted (default 5 s). */
  xmlCacheTtlMs?: number;
  /** Runs host tools (losetup, iscsi-readcapacity16); tests replace it. */
  run?: RunCommand;
}

const noopLogger: Logger = { info() {}, warn() {}, debug() {}, error() {} };

/** libvirt's words for "the host does not see the new size yet" (qemu/block, libvirt 9). */
const HOST_TOO_SMALL_RE = /Cannot grow (device files|iSCSI devices)|cannot grow/i;

export class LibvirtDriver implements VirtDriver {
  readonly name = 'libvirt';
  readonly capabilities: DriverCapabilities = { extendVolume: true, attachVolume: true };

  readonly host: Host;
  private readonly storage: HostStorage;
  private readonly log: Logger;
  private readonly defaultProjectId: string | undefined;
  private readonly detachTimeoutMs: number;
  private readonly liveSizeMethod: LiveSizeMethod;

  constructor(opts: LibvirtDriverOptions = {}) {
    this.log = opts.logger ?? noopLogger;
    this.host = new Host({
      uri: opts.uri ?? 'qemu:///system',
      logger: this.log,
      ...(opts.callTimeoutMs !== undefined ? { callTimeoutMs: opts.callTimeoutMs } : {}),
      ...(opts.xmlCacheTtlMs !== undefined ? { xmlCacheTtlMs: opts.xmlCacheTtlMs } : {}),
    });
    this.storage = new HostStorage({
      ...(opts.sysfsRoot !== undefined ? { sysfsRoot: opts.sysfsRoot } : {}),
      ...(opts.run ? { run: opts.run } : {}),
    });
    this.defaultProjectId = opts.defaultProjectId;
    this.detachTimeoutMs = opts.detachTimeoutMs ?? 20_000;
    this.liveSizeMethod = opts.liveSizeMethod ?? 'query-block';
  }

  get uri(): string {
    return this.host.uri;
  }

  // ---------------------------------------------------------------------------------------------
  // VirtDriver

  async listServers(): Promise<DriverServer[]> {
    try {
      const guests = await this.host.listGuests();
      const out = await Promise.all(
        guests.map(async (g): Promise<DriverServer | undefined> => {
          try {
            const [{ info }, st] = await Promise.all([g.info({ fresh: true }), g.state()]);
            const projectId = info.projectId ?? this.defaultProjectId;
            return {
              id: g.uuid,
              name: info.name || g.name,
              ...(projectId !== undefined ? { projectId } : {}),
              state: st.state,
              disks: volumeDisks(info).map(toDriverDisk),
            };
          } catch (err) {
            // A domain that vanished between the list and the details is simply gone.
            if (err instanceof LibvirtError && err.code === VirErrorCode.NO_DOMAIN) return undefined;
            throw err;
          }
        }),
      );
      return out.filter((s): s is DriverServer => s !== undefined);
    } catch (err) {
      throw this.mapError(err, {});
    }
  }

  async rescan(serverId: string, volumeId: string): Promise<void> {
    const { disk } = await this.resolve(serverId, volumeId);
    if (disk.kind !== 'block' || !disk.source) return; // file, network: QEMU/the target own the size
    try {
      const written = await this.storage.rescanBlockDevice(disk.source);
      this.log.info({ serverId, volumeId, device: disk.source, paths: written.length }, 'rescanned host block device');
    } catch (err) {
      throw errors.driverFailed(`rescan of ${disk.source} failed: ${(err as Error).message}`, { cause: err });
    }
  }

  async getHostBytes(serverId: string, volumeId: string): Promise<number> {
    const { disk } = await this.resolve(serverId, volumeId);
    return this.hostBytes(disk);
  }

  async getGuestBytes(serverId: string, volumeId: string): Promise<number> {
    const { guest, disk } = await this.resolve(serverId, volumeId);
    try {
      return await this.liveBytes(guest, disk);
    } catch (err) {
      throw await this.mapVolumeError(err, guest, serverId, volumeId, 'get guest size');
    }
  }

  async extendAttached(serverId: string, volumeId: string, bytes: number, opts: ExtendOptions = {}): Promise<number> {
    if (!Number.isSafeInteger(bytes) || bytes <= 0) {
      throw errors.invalidInput(`size must be a positive whole number of bytes, got ${bytes}`);
    }
    // NOTE: read-check-resize must not interleave on one volume: two requests reading the same
    // size could otherwise resize in the wrong order, and the second one would shrink the disk.
    return this.locks.run(`${serverId.toLowerCase()}/${volumeId}`, () => this.extendLocked(serverId, volumeId, bytes, opts.currentGuestBytes));
  }

  private async extendLocked(serverId: string, volumeId: string, bytes: number, measuredNow?: number): Promise<number> {
    const { guest, disk } = await this.resolve(serverId, volumeId);
    const action = 'extend volume';
    let current: number;
    if (measuredNow !== undefined) {
      // The caller read the live size just now under the volume's lock (which proves the domain
      // runs): a second QEMU round trip would only add latency. A domain stopped since then makes
      // the resize itself fail, and that is mapped below.
      current = measuredNow;
    } else {
      // State and live size in parallel; the state decides first, since a stopped domain has no live size.
      const [st, live] = await Promise.allSettled([guest.state(), this.liveBytes(guest, disk)]);
      try {
        if (st.status === 'rejected') throw st.reason;
        if (st.value.state !== 'active' && st.value.state !== 'paused') {
          throw errors.instanceInvalidState(serverId, st.value.state, action);
        }
        if (live.status === 'rejected') throw live.reason;
        current = live.value;
      } catch (err) {
        throw await this.mapVolumeError(err, guest, serverId, volumeId, action);
      }
    }
    // NOTE: libvirt 9 and QEMU shrink without complaint; refusing is our job, before any call.
    if (bytes < current) throw errors.shrinkRefused(volumeId, bytes, current);
    if (bytes === current) return current;
    if (disk.readonly) {
      throw errors.diskReadOnly(volumeId, disk.target, serverId);
    }
    if (disk.kind === 'block' && disk.source) {
      // Cheap (sysfs) and gives the message the host's figure; QEMU would refuse anyway.
      const host = await this.storage.blockDeviceBytes(disk.source).catch(() => undefined);
      if (host !== undefined && host < bytes) throw errors.hostSizeTooSmall(volumeId, bytes, host);
    }
    const started = process.hrtime.bigint();
    try {
      await guest.blockResize(disk.target, bytes);
    } catch (err) {
      if (err instanceof LibvirtError && HOST_TOO_SMALL_RE.test(err.message)) {
        const host = await this.hostBytes(disk).catch(() => undefined);
        throw errors.hostSizeTooSmall(volumeId, bytes, host);
      }
      throw await this.mapVolumeError(err, guest, serverId, volumeId, action);
    }
    let after: number;
    try {
      after = await this.liveBytes(guest, disk);
    } catch (err) {
      throw await this.mapVolumeError(err, guest, serverId, volumeId, action);
    }
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    this.log.info({ serverId, volumeId, device: disk.target, from: current, requested: bytes, bytes: after, ms }, 'resized attached disk');
    if (after < bytes) {
      throw errors.driverFailed(`volume ${volumeId} reads ${after} bytes after a resize to ${bytes}`);
    }
    return after;
  }

  async attachVolume(serverId: string, spec: AttachSpec): Promise<string> {
    const guest = await this.lookup(serverId);
    let info: DomainInfo;
    try {
      info = (await guest.info({ fresh: true })).info;
    } catch (err) {
      throw this.mapError(err, { serverId });
    }
    const existing = volumeDisks(info).find((d) => d.serial === spec.volumeId);
    if (existing) return existing.target;
    const used = info.disks.map((d) => d.target);
    if (spec.device !== undefined && used.includes(spec.device)) {
      throw errors.driverFailed(`device ${spec.device} is already in use on instance ${serverId}`);
    }
    const device = spec.device ?? nextFreeDevice(used);
    const xml = buildDiskXml(spec, device);
    try {
      await guest.attachDevice(xml);
    } catch (err) {
      throw await this.mapVolumeError(err, guest, serverId, spec.volumeId, 'attach volume');
    }
    this.log.info({ serverId, volumeId: spec.volumeId, device, kind: spec.kind }, 'attached volume');
    return device;
  }

  async detachVolume(serverId: string, volumeId: string): Promise<void> {
    const { guest, disk } = await this.resolve(serverId, volumeId, { fresh: true });
    try {
      await guest.detachDevice(disk.xml);
    } catch (err) {
      // Gone already (a concurrent detach, or the guest was quicker than our lookup).
      if (!(err instanceof LibvirtError && /not found|no (disk|target) device/i.test(err.message))) {
        throw await this.mapVolumeError(err, guest, serverId, volumeId, 'detach volume');
      }
    }
    // NOTE: the guest must release the device (ACPI/PCI unplug); libvirt returns before it does.
    const deadline = Date.now() + this.detachTimeoutMs;
    for (;;) {
      let still: boolean;
      try {
        const { info } = await guest.info({ fresh: true });
        still = volumeDisks(info).some((d) => d.serial === volumeId);
      } catch (err) {
        throw this.mapError(err, { serverId, volumeId });
      }
      if (!still) break;
      if (Date.now() >= deadline) {
        throw errors.driverFailed(
          `instance ${serverId} did not release volume ${volumeId} (${disk.target}) within ${this.detachTimeoutMs} ms`,
          { retryable: true },
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    this.log.info({ serverId, volumeId, device: disk.target }, 'detached volume');
  }

  async close(): Promise<void> {
    await this.host.close();
  }

  // ---------------------------------------------------------------------------------------------
  // Internals

  private readonly locks = new KeyedMutex();

  private async lookup(serverId: string): Promise<Guest> {
    try {
      return await this.host.lookup(serverId);
    } catch (err) {
      throw this.mapError(err, { serverId });
    }
  }

  /** The guest and the disk carrying `volumeId`, from cached XML (refetched once on a miss). */
  private async resolve(serverId: string, volumeId: string, opts: { fresh?: boolean } = {}): Promise<{ guest: Guest; disk: DomainDisk }> {
    const guest = await this.lookup(serverId);
    try {
      let { info, fromCache } = await guest.info(opts);
      let disk = volumeDisks(info).find((d) => d.serial === volumeId);
      if (!disk && fromCache) {
        ({ info, fromCache } = await guest.info({ fresh: true }));
        disk = volumeDisks(info).find((d) => d.serial === volumeId);
      }
      if (!disk) throw errors.volumeNotAttached(volumeId, serverId);
      return { guest, disk };
    } catch (err) {
      throw this.mapError(err, { serverId, volumeId });
    }
  }

  private liveBytes(guest: Guest, disk: DomainDisk): Promise<number> {
    return guest.liveBytes(disk.target, this.liveSizeMethod, {
      ...(disk.alias !== undefined ? { alias: disk.alias } : {}),
      ...(disk.sourceIndex !== undefined ? { sourceIndex: disk.sourceIndex } : {}),
    });
  }

  private async hostBytes(disk: DomainDisk): Promise<number> {
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
            throw new Error(`host size of ${disk.protocol ?? 'unknown'} network disks is not supported`);
          }
          return await this.storage.iscsiLunBytes(disk.source, disk.portal);
      }
      throw new Error(`disk ${disk.target} has no source`);
    } catch (err) {
      throw errors.driverFailed(`cannot read the host size of ${disk.source ?? disk.target}: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Maps errors of a call on an attached volume. A missing disk or a stopped domain is told
   * apart by looking again (the cached XML may be stale), not by parsing every message.
   */
  private async mapVolumeError(err: unknown, guest: Guest, serverId: string, volumeId: string, action: string): Promise<ServiceError> {
    if (isServiceError(err)) return err;
    if (err instanceof LibvirtError) {
      guest.invalidate();
      if (err.code === VirErrorCode.NO_DOMAIN) {
        this.host.forget(serverId);
        return errors.instanceNotFound(serverId);
      }
      if (err.code === VirErrorCode.OPERATION_INVALID && /not running/i.test(err.message)) {
        const state = await guest.state().then((s) => s.state, () => 'unknown');
        return errors.instanceInvalidState(serverId, state, action);
      }
      if (/(disk|target|device).*not found|not found.*disk|no disk/i.test(err.message)) {
        return errors.volumeNotAttached(volumeId, serverId);
      }
    }
    return this.mapError(err, { serverId, volumeId });
  }

  private mapError(err: unknown, ctx: { serverId?: string; volumeId?: string }): ServiceError {
    if (isServiceError(err)) return err;
    if (err instanceof LibvirtConnectionError) return errors.hypervisorUnreachable(err.uri, err.reason);
    if (err instanceof LibvirtTimeoutError) return errors.driverFailed(err.message, { retryable: true, cause: err });
    if (err instanceof LibvirtError) {
      if (err.code === VirErrorCode.NO_DOMAIN && ctx.serverId !== undefined) {
        this.host.forget(ctx.serverId);
        return errors.instanceNotFound(ctx.serverId);
      }
      this.log.warn({ ...ctx, code: err.code, domain: err.domain, procedure: err.procedure, reason: err.message }, 'libvirt call failed');
      return errors.driverFailed(err.message, { cause: err });
    }
    this.log.error({ ...ctx, err }, 'unexpected libvirt driver failure');
    return errors.driverFailed((err as Error)?.message ?? String(err), { cause: err });
  }
}
