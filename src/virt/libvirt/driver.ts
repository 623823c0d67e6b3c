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
 * - Persistent domains: attach and detach change the persistent definition too, so a shut-off
 *   server keeps its volumes; rescan and host sizes work on it (offline extend), its guest size
 *   and resizes answer InstanceStopped.
 * - Errors: every failure is classified where it happens, never by libvirt's message text:
 *   libvirt's by error number (LIBVIRT_ERRORS), after looking again at the domain and the host
 *   (`reobserve`); the host's by errno or exit status (storage.ts). Public messages name no path
 *   or command line; those go in `detail`.
 */
import { dirname } from 'node:path';
import { KeyedMutex } from '../../util/keyedMutex.js';
import { maxFileBytes } from '../../util/fsLimits.js';
import { errnoOf } from '../../util/errno.js';
import { errors, isServiceError, type ServiceError } from '../../errors.js';
import type { ExtendOptions, AttachSpec, DriverCapabilities, DriverServer, ServerState, VirtDriver } from '../driver.js';
import { buildDiskXml, MAX_DEVICE_NAMES, nextFreeDevice, toDriverDisk, volumeDisks, type DomainDisk, type DomainInfo } from './domxml.js';
import type { Guest, LiveSizeMethod } from './guest.js';
import { Host } from './host.js';
import { DomainAffect } from './remote/client.js';
import { uuidToBytes } from './remote/protocol.js';
import { LibvirtConnectionError, LibvirtError, LibvirtProtocolError, LibvirtTimeoutError, VirErrorCode } from './remote/errors.js';
import type { Logger } from './remote/client.js';
import { HostStorage, hostFailed, type RunCommand } from './storage.js';

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
  /** The largest file a directory's filesystem holds (src/util/fsLimits.ts); tests replace it. */
  maxFileBytes?: (dir: string) => Promise<number>;
}

const noopLogger: Logger = { info() {}, warn() {}, debug() {}, error() {} };

/** States with a running QEMU: only there is a disk's guest size live, and can it be resized. */
const RUNNING_STATES: ReadonlySet<ServerState> = new Set(['active', 'paused']);

/** How one libvirt error number is read: its name, final or uncertain, and a public reason. */
export interface LibvirtErrorClass {
  name: string;
  final: boolean;
  reason: string;
}

/**
 * THE classification of libvirt's errors, by virErrorNumber (include/libvirt/virterror.h),
 * never by message text. Uncertain: the operation may succeed if tried again unchanged (a
 * timeout waiting for the domain's job lock, a broken RPC, a busy resource or block job, an
 * unresponsive guest agent, libvirtd short of memory, an aborted job). Everything else, and any
 * number not listed, is final (external-resizer's rule for what nobody understood).
 *
 * Before this table is consulted the driver looks again at what the failure may be about (see
 * `reobserve`): a domain that is gone or no longer running, a disk that is no longer attached, a
 * host size below the request, a file size above what its filesystem holds. Those answers come
 * from the hypervisor and the host as they are now, not from libvirt's words.
 */
export const LIBVIRT_ERRORS: Readonly<Record<number, LibvirtErrorClass>> = {
  [VirErrorCode.INTERNAL_ERROR]: { name: 'VIR_ERR_INTERNAL_ERROR', final: true, reason: 'libvirt or QEMU reported an internal error' },
  [VirErrorCode.NO_MEMORY]: { name: 'VIR_ERR_NO_MEMORY', final: false, reason: 'libvirtd is out of memory' },
  [VirErrorCode.NO_SUPPORT]: { name: 'VIR_ERR_NO_SUPPORT', final: true, reason: 'the hypervisor does not support this operation' },
  [VirErrorCode.NO_CONNECT]: { name: 'VIR_ERR_NO_CONNECT', final: false, reason: 'libvirtd has no connection to the hypervisor' },
  [VirErrorCode.INVALID_CONN]: { name: 'VIR_ERR_INVALID_CONN', final: false, reason: 'the connection to libvirtd is no longer valid' },
  [VirErrorCode.INVALID_DOMAIN]: { name: 'VIR_ERR_INVALID_DOMAIN', final: true, reason: 'the domain handle is not valid' },
  [VirErrorCode.INVALID_ARG]: { name: 'VIR_ERR_INVALID_ARG', final: true, reason: 'libvirt refused an argument' },
  [VirErrorCode.OPERATION_FAILED]: { name: 'VIR_ERR_OPERATION_FAILED', final: true, reason: 'the operation failed in libvirt' },
  [VirErrorCode.XML_ERROR]: { name: 'VIR_ERR_XML_ERROR', final: true, reason: 'libvirt refused the device description' },
  [VirErrorCode.OPERATION_DENIED]: { name: 'VIR_ERR_OPERATION_DENIED', final: true, reason: 'libvirt denied the operation' },
  [VirErrorCode.SYSTEM_ERROR]: { name: 'VIR_ERR_SYSTEM_ERROR', final: true, reason: 'a system call failed on the hypervisor host' },
  [VirErrorCode.RPC]: { name: 'VIR_ERR_RPC', final: false, reason: 'the call to libvirtd broke off' },
  [VirErrorCode.NO_DOMAIN]: { name: 'VIR_ERR_NO_DOMAIN', final: true, reason: 'the domain does not exist' },
  [VirErrorCode.AUTH_FAILED]: { name: 'VIR_ERR_AUTH_FAILED', final: true, reason: 'libvirtd refused the credentials' },
  [VirErrorCode.OPERATION_INVALID]: { name: 'VIR_ERR_OPERATION_INVALID', final: true, reason: 'the operation is not valid in the state of the domain' },
  [VirErrorCode.CONFIG_UNSUPPORTED]: { name: 'VIR_ERR_CONFIG_UNSUPPORTED', final: true, reason: 'the hypervisor does not support this configuration' },
  [VirErrorCode.OPERATION_TIMEOUT]: { name: 'VIR_ERR_OPERATION_TIMEOUT', final: false, reason: 'timed out waiting for the domain (another job holds it)' },
  [VirErrorCode.ARGUMENT_UNSUPPORTED]: { name: 'VIR_ERR_ARGUMENT_UNSUPPORTED', final: true, reason: 'the hypervisor does not support an argument' },
  [VirErrorCode.OPERATION_ABORTED]: { name: 'VIR_ERR_OPERATION_ABORTED', final: false, reason: 'the operation was aborted' },
  [VirErrorCode.BLOCK_COPY_ACTIVE]: { name: 'VIR_ERR_BLOCK_COPY_ACTIVE', final: false, reason: 'a block job is active on the disk' },
  [VirErrorCode.OPERATION_UNSUPPORTED]: { name: 'VIR_ERR_OPERATION_UNSUPPORTED', final: true, reason: 'the hypervisor does not support this operation' },
  [VirErrorCode.AGENT_UNRESPONSIVE]: { name: 'VIR_ERR_AGENT_UNRESPONSIVE', final: false, reason: 'the guest agent does not respond' },
  [VirErrorCode.RESOURCE_BUSY]: { name: 'VIR_ERR_RESOURCE_BUSY', final: false, reason: 'the resource is in use' },
  [VirErrorCode.ACCESS_DENIED]: { name: 'VIR_ERR_ACCESS_DENIED', final: true, reason: 'libvirt denied access' },
  [VirErrorCode.AGENT_UNSYNCED]: { name: 'VIR_ERR_AGENT_UNSYNCED', final: false, reason: 'the guest agent is out of sync' },
  [VirErrorCode.DEVICE_MISSING]: { name: 'VIR_ERR_DEVICE_MISSING', final: true, reason: 'the device is missing' },
};

/** The class of a libvirt error number; unknown numbers are final. */
export function classifyLibvirtError(code: number): LibvirtErrorClass {
  return Object.hasOwn(LIBVIRT_ERRORS, code) ? LIBVIRT_ERRORS[code]! : { name: `libvirt error ${code}`, final: true, reason: 'libvirt refused the operation' };
}

/** What the failure of a call on an attached volume may be about; `reobserve` looks at each. */
interface FailureContext {
  serverId: string;
  volumeId: string;
  action: string;
  /** The call acted on the running domain: if it no longer runs, that is the answer. */
  live: boolean;
  /** The disk should still be attached (false for attach, where it is not there yet). */
  diskExpected: boolean;
  /** A resize to this size: also re-measure the host size and the file size limit. */
  resize?: { disk: DomainDisk; bytes: number };
}

export class LibvirtDriver implements VirtDriver {
  readonly name = 'libvirt';
  readonly capabilities: DriverCapabilities = { extendVolume: true, attachVolume: true, maxVolumesPerServer: MAX_DEVICE_NAMES - 1 };

  readonly host: Host;
  private readonly storage: HostStorage;
  private readonly log: Logger;
  private readonly defaultProjectId: string | undefined;
  private readonly detachTimeoutMs: number;
  private readonly liveSizeMethod: LiveSizeMethod;
  private readonly maxFileBytes: (dir: string) => Promise<number>;

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
    this.maxFileBytes = opts.maxFileBytes ?? maxFileBytes;
  }

  get uri(): string {
    return this.host.uri;
  }

  // ---------------------------------------------------------------------------------------------
  // VirtDriver

  async listServers(): Promise<DriverServer[]> {
    try {
      const guests = await this.host.listGuests();
      const out = await Promise.all(guests.map((g) => this.describeGuest(g)));
      return out.filter((s): s is DriverServer => s !== undefined);
    } catch (err) {
      throw this.mapError(err, { action: 'list servers' });
    }
  }

  /**
   * One domain by UUID: a fresh lookup (a handle cached by Host.lookup may belong to a domain
   * undefined or restarted since), then its XML and state, read as listServers reads them. An id that is not
   * a UUID names no domain: undefined without asking libvirtd.
   */
  async getServer(serverId: string): Promise<DriverServer | undefined> {
    if (!uuidToBytes(serverId)) return undefined;
    try {
      const guest = await this.host.lookup(serverId, { fresh: true });
      const server = await this.describeGuest(guest);
      if (!server) this.host.forget(serverId);
      return server;
    } catch (err) {
      // Host.lookup forgets a domain it no longer finds.
      if (err instanceof LibvirtError && err.code === VirErrorCode.NO_DOMAIN) return undefined;
      throw this.mapError(err, { serverId, action: 'look up instance' });
    }
  }

  /** A domain as a DriverServer (fresh XML and state); undefined if it vanished meanwhile. */
  private async describeGuest(g: Guest): Promise<DriverServer | undefined> {
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
      // A domain that vanished between the lookup (or list) and the details is simply gone.
      if (err instanceof LibvirtError && err.code === VirErrorCode.NO_DOMAIN) return undefined;
      throw err;
    }
  }

  /**
   * Works on a shut-off domain too: its XML is the persistent definition, and loop devices and
   * files exist without QEMU, so an offline extend grows the host side before the next boot.
   */
  async rescan(serverId: string, volumeId: string): Promise<void> {
    const { disk } = await this.resolve(serverId, volumeId);
    if (disk.kind !== 'block' || !disk.source) return; // file, network: QEMU/the target own the size
    let written: string[];
    try {
      written = await this.storage.rescanBlockDevice(disk.source);
    } catch (err) {
      throw hostFailed('rescan the host block device of the volume', err, { detail: disk.source });
    }
    this.log.info({ serverId, volumeId, device: disk.source, paths: written.length }, 'rescanned host block device');
  }

  /** The host's size of the volume; works on a shut-off domain too (see rescan). */
  async getHostBytes(serverId: string, volumeId: string): Promise<number> {
    const { disk } = await this.resolve(serverId, volumeId);
    return this.hostBytes(disk);
  }

  /** The live size; a domain that is not running has none: InstanceStopped / InstanceInvalidState. */
  async getGuestBytes(serverId: string, volumeId: string): Promise<number> {
    const { guest, disk } = await this.resolve(serverId, volumeId);
    return this.liveBytesOfRunning(guest, disk, serverId, volumeId, 'get guest size');
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
    // The caller read the live size just now under the volume's lock (which proves the domain
    // runs): a second QEMU round trip would only add latency. A domain stopped since then makes
    // the resize itself fail, and the failure is re-observed below.
    const current = measuredNow ?? (await this.liveBytesOfRunning(guest, disk, serverId, volumeId, action));
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
    // QEMU grows a raw file itself, and would fail half-way with EFBIG past what the file's
    // filesystem holds: refuse that with a 400 before asking.
    const limit = await this.fileLimit(disk);
    if (limit !== undefined && bytes > limit) throw this.tooLarge(volumeId, bytes, limit, disk);
    const started = process.hrtime.bigint();
    try {
      await guest.blockResize(disk.target, bytes);
    } catch (err) {
      throw await this.reobserve(err, guest, { serverId, volumeId, action, live: true, diskExpected: true, resize: { disk, bytes } });
    }
    let after: number;
    try {
      after = await this.liveBytes(guest, disk);
    } catch (err) {
      throw await this.reobserve(err, guest, { serverId, volumeId, action, live: true, diskExpected: true });
    }
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    this.log.info({ serverId, volumeId, device: disk.target, from: current, requested: bytes, bytes: after, ms }, 'resized attached disk');
    if (after < bytes) {
      throw errors.driverFailed(`volume ${volumeId} reads ${after} bytes after a resize to ${bytes}`);
    }
    return after;
  }

  /**
   * Hot-plugs the disk into the running domain and, when the domain is persistent, into its
   * persistent definition too (VIR_DOMAIN_AFFECT_LIVE | VIR_DOMAIN_AFFECT_CONFIG), so the disk
   * (and its `<serial>`) is still there after the domain is shut off and started again. A
   * shut-off persistent domain gets it in its definition only. Idempotent per definition: a disk
   * already in one of them is added only where it is missing, under the same device name.
   */
  async attachVolume(serverId: string, spec: AttachSpec): Promise<string> {
    const guest = await this.lookup(serverId);
    let live: DomainInfo | undefined;
    let config: DomainInfo | undefined;
    try {
      const active = await guest.isActive();
      [live, config] = await Promise.all([active ? guest.info({ fresh: true }).then((r) => r.info) : undefined, guest.persistentInfo()]);
    } catch (err) {
      throw this.mapError(err, { serverId, action: 'attach volume' });
    }
    const inLive = live && volumeDisks(live).find((d) => d.serial === spec.volumeId);
    const inConfig = config && volumeDisks(config).find((d) => d.serial === spec.volumeId);
    const flags = (live && !inLive ? DomainAffect.LIVE : 0) | (config && !inConfig ? DomainAffect.CONFIG : 0);
    const existing = inLive ?? inConfig;
    if (flags === 0 && existing) return existing.target;
    let device = existing?.target;
    if (device === undefined) {
      const used = new Set([...(live?.disks ?? []), ...(config?.disks ?? [])].map((d) => d.target));
      if (spec.device !== undefined && used.has(spec.device)) {
        throw errors.devicePathInUse(spec.device, serverId);
      }
      try {
        device = spec.device ?? nextFreeDevice(used);
      } catch {
        throw errors.tooManyDiskDevices(serverId);
      }
    }
    try {
      await guest.attachDevice(buildDiskXml(spec, device), flags);
    } catch (err) {
      throw await this.reobserve(err, guest, { serverId, volumeId: spec.volumeId, action: 'attach volume', live: (flags & DomainAffect.LIVE) !== 0, diskExpected: false });
    }
    this.log.info({ serverId, volumeId: spec.volumeId, device, kind: spec.kind, live: (flags & DomainAffect.LIVE) !== 0, config: (flags & DomainAffect.CONFIG) !== 0 }, 'attached volume');
    return device;
  }

  /**
   * Unplugs the disk from wherever it is: the running domain (then waits until the guest released
   * it) and the persistent definition. Idempotent: a disk already gone is fine.
   */
  async detachVolume(serverId: string, volumeId: string): Promise<void> {
    const guest = await this.lookup(serverId);
    const find = async (): Promise<{ live: DomainDisk | undefined; config: DomainDisk | undefined }> => {
      const active = await guest.isActive();
      const [live, config] = await Promise.all([active ? guest.info({ fresh: true }).then((r) => r.info) : undefined, guest.persistentInfo()]);
      return {
        live: live && volumeDisks(live).find((d) => d.serial === volumeId),
        config: config && volumeDisks(config).find((d) => d.serial === volumeId),
      };
    };
    let where: Awaited<ReturnType<typeof find>>;
    try {
      where = await find();
    } catch (err) {
      throw this.mapError(err, { serverId, volumeId, action: 'detach volume' });
    }
    const disk = where.live ?? where.config;
    if (!disk) throw errors.volumeNotAttached(volumeId, serverId);
    const flags = (where.live ? DomainAffect.LIVE : 0) | (where.config ? DomainAffect.CONFIG : 0);
    try {
      await guest.detachDevice(disk.xml, flags);
    } catch (err) {
      // Gone already (a concurrent detach, or the guest was quicker than our lookup)? Decided by
      // looking again, not by libvirt's words.
      const now = await find().catch(() => undefined);
      if (!now || now.live || now.config) {
        throw await this.reobserve(err, guest, { serverId, volumeId, action: 'detach volume', live: where.live !== undefined, diskExpected: true });
      }
    }
    if (where.live) await this.waitReleased(guest, serverId, volumeId, disk.target);
    this.log.info({ serverId, volumeId, device: disk.target }, 'detached volume');
  }

  async close(): Promise<void> {
    await this.host.close();
  }

  // ---------------------------------------------------------------------------------------------
  // Internals

  private readonly locks = new KeyedMutex();

  /** NOTE: the guest must release the device (ACPI/PCI unplug); libvirt returns before it does. */
  private async waitReleased(guest: Guest, serverId: string, volumeId: string, target: string): Promise<void> {
    const deadline = Date.now() + this.detachTimeoutMs;
    for (;;) {
      let still: boolean;
      try {
        const { info } = await guest.info({ fresh: true });
        still = volumeDisks(info).some((d) => d.serial === volumeId);
      } catch (err) {
        throw this.mapError(err, { serverId, volumeId, action: 'detach volume' });
      }
      if (!still) return;
      if (Date.now() >= deadline) {
        throw errors.driverFailed(`instance ${serverId} did not release volume ${volumeId} (${target}) within ${this.detachTimeoutMs} ms`, { final: false });
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private async lookup(serverId: string): Promise<Guest> {
    try {
      return await this.host.lookup(serverId);
    } catch (err) {
      throw this.mapError(err, { serverId, action: 'look up instance' });
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
      throw this.mapError(err, { serverId, volumeId, action: 'read the domain' });
    }
  }

  private liveBytes(guest: Guest, disk: DomainDisk): Promise<number> {
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
  private async liveBytesOfRunning(guest: Guest, disk: DomainDisk, serverId: string, volumeId: string, action: string): Promise<number> {
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

  private async hostBytes(disk: DomainDisk): Promise<number> {
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

  /** The largest raw file disk's filesystem holds, or undefined (not a raw file, or unmeasurable). */
  private async fileLimit(disk: DomainDisk): Promise<number | undefined> {
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

  private tooLarge(volumeId: string, bytes: number, limit: number, disk: DomainDisk): ServiceError {
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
  private async reobserve(err: unknown, guest: Guest, ctx: FailureContext): Promise<ServiceError> {
    if (isServiceError(err)) return err;
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
      const info = await guest.info({ fresh: true }).catch(() => undefined);
      if (info && !volumeDisks(info.info).some((d) => d.serial === ctx.volumeId)) return errors.volumeNotAttached(ctx.volumeId, ctx.serverId);
    }
    if (ctx.resize) {
      const { disk, bytes } = ctx.resize;
      if (disk.kind !== 'file') {
        const host = await this.hostBytes(disk).catch(() => undefined);
        if (host !== undefined && host < bytes) return errors.hostSizeTooSmall(ctx.volumeId, bytes, host);
      } else {
        const limit = await this.fileLimit(disk);
        if (limit !== undefined && bytes > limit) return this.tooLarge(ctx.volumeId, bytes, limit, disk);
      }
    }
    return this.mapError(err, ctx);
  }

  /** Classifies a failure without looking again: libvirt's by number, the transport's by kind. */
  private mapError(err: unknown, ctx: { serverId?: string; volumeId?: string; action: string }): ServiceError {
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
