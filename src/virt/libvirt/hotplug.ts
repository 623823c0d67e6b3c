/**
 * Hot-plug and unplug of volume disks on libvirt domains (virDomainAttachDeviceFlags /
 * virDomainDetachDeviceFlags), live and in the persistent definition.
 *
 * Locking: the compute manager serializes every operation on one volume (src/compute/locks.ts);
 * what it cannot see is the domain's device names. Two attaches of different volumes to one
 * domain would read the same domain XML and pick the same free name, so the read → choose →
 * plug section of an attach runs under `domainDeviceLocks`, keyed by domain (server id). A
 * detach picks no name and does not take it (its wait for the guest to release the disk can take
 * seconds and must not hold up other attaches).
 */
import { KeyedMutex } from '../../util/keyedMutex.js';
import { errors } from '../../errors.js';
import type { AttachSpec } from '../driver.js';
import { buildDiskXml, nextFreeDevice, volumeDisks, type DomainDisk, type DomainInfo } from './domxml.js';
import type { Guest } from './guest.js';
import { DomainAffect } from './remote/client.js';
import type { DomainDisks } from './disks.js';
import { ensureVolumeSecret, undefineSecret } from './secrets.js';
import { currentTimings, withTimings } from '../../util/timing.js';

/** Attach and detach for LibvirtDriver (see the file header for the contract and the locking). */
export class DiskHotplug {
  /** Per domain (server id, lower case): the device-name choice of attaches, see the header. */
  private readonly domainDeviceLocks = new KeyedMutex();

  /**
   * @param disks the driver's disk lookup and failure classification.
   * @param detachTimeoutMs how long a detach waits for the guest to release the disk, in ms.
   */
  constructor(
    private readonly disks: DomainDisks,
    private readonly detachTimeoutMs: number,
  ) {}

  /**
   * Hot-plugs the disk into the running domain and, when the domain is persistent, into its
   * persistent definition too (VIR_DOMAIN_AFFECT_LIVE | VIR_DOMAIN_AFFECT_CONFIG), so the disk
   * (and its `<serial>`) is still there after the domain is shut off and started again. A
   * shut-off persistent domain gets it in its definition only. Idempotent per definition: a disk
   * already in one of them is added only where it is missing, under the same device name.
   * Returns the guest device name (`vdb`…). Throws DevicePathInUse, TooManyDiskDevices (403),
   * InstanceNotFound (404), DriverFailed (500), HypervisorUnreachable (503).
   */
  attachVolume(serverId: string, spec: AttachSpec): Promise<string> {
    // A domain's UUID may be spelled in either case: one lock per domain.
    return this.domainDeviceLocks.run(serverId.toLowerCase(), () => this.attachLocked(serverId, spec));
  }

  private async attachLocked(serverId: string, spec: AttachSpec): Promise<string> {
    // The request's timings, current only until the first await: each step below re-enters them (util/timing.ts).
    const timings = currentTimings();
    const within = <T>(call: () => T): T => withTimings(timings, call);
    const guest = await this.disks.lookup(serverId);
    let live: DomainInfo | undefined;
    let config: DomainInfo | undefined;
    try {
      const active = await within(() => guest.isActive());
      [live, config] = await within(() => Promise.all([active ? guest.info({ fresh: true }).then((r) => r.info) : undefined, guest.persistentInfo()]));
    } catch (err) {
      throw this.disks.mapError(err, { serverId, action: 'attach volume' });
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
    // An encrypted volume's passphrase goes into its libvirt secret first (secrets.ts), which
    // the disk's <encryption> names.
    const secretUuid = spec.encryption ? await within(() => this.defineSecret(serverId, spec.volumeId, spec.encryption!.passphrase)) : undefined;
    try {
      await within(() => guest.attachDevice(buildDiskXml(spec, device, secretUuid), flags));
    } catch (err) {
      const failed = await within(() => this.disks.reobserve(err, guest, { serverId, volumeId: spec.volumeId, action: 'attach volume', live: (flags & DomainAffect.LIVE) !== 0, diskExpected: false }));
      // Nothing plugged in for good: the secret goes too (an uncertain failure may have plugged it).
      if (secretUuid !== undefined && failed.final && !existing) await undefineSecret(this.disks.host.client, secretUuid).catch(() => undefined);
      throw failed;
    }
    this.disks.log.info(
      { serverId, volumeId: spec.volumeId, device, kind: spec.kind, encrypted: spec.encryption !== undefined, live: (flags & DomainAffect.LIVE) !== 0, config: (flags & DomainAffect.CONFIG) !== 0 },
      'attached volume',
    );
    return device;
  }

  /** Define the volume's libvirt secret with its passphrase; answers the secret's UUID. Errors mapped as the attach's. */
  private async defineSecret(serverId: string, volumeId: string, passphrase: string): Promise<string> {
    try {
      return await ensureVolumeSecret(this.disks.host.client, volumeId, passphrase);
    } catch (err) {
      throw this.disks.mapError(err, { serverId, volumeId, action: 'define the secret of the encrypted volume' });
    }
  }

  /**
   * Unplugs the disk from wherever it is: the running domain (then waits until the guest released
   * it) and the persistent definition. Idempotent: a disk already gone is fine.
   */
  async detachVolume(serverId: string, volumeId: string): Promise<void> {
    // The request's timings, current only until the first await: each step below re-enters them (util/timing.ts).
    const timings = currentTimings();
    const within = <T>(call: () => T): T => withTimings(timings, call);
    const guest = await this.disks.lookup(serverId);
    const find = async (): Promise<{ live: DomainDisk | undefined; config: DomainDisk | undefined }> => {
      const active = await within(() => guest.isActive());
      const [live, config] = await within(() => Promise.all([active ? guest.info({ fresh: true }).then((r) => r.info) : undefined, guest.persistentInfo()]));
      return {
        live: live && volumeDisks(live).find((d) => d.serial === volumeId),
        config: config && volumeDisks(config).find((d) => d.serial === volumeId),
      };
    };
    let where: Awaited<ReturnType<typeof find>>;
    try {
      where = await find();
    } catch (err) {
      throw this.disks.mapError(err, { serverId, volumeId, action: 'detach volume' });
    }
    const disk = where.live ?? where.config;
    if (!disk) throw errors.volumeNotAttached(volumeId, serverId);
    const flags = (where.live ? DomainAffect.LIVE : 0) | (where.config ? DomainAffect.CONFIG : 0);
    try {
      await within(() => guest.detachDevice(disk.xml, flags));
    } catch (err) {
      // Gone already (a concurrent detach, or the guest was quicker than our lookup)? Decided by
      // looking again, not by libvirt's words.
      const now = await find().catch(() => undefined);
      if (!now || now.live || now.config) {
        throw await within(() => this.disks.reobserve(err, guest, { serverId, volumeId, action: 'detach volume', live: where.live !== undefined, diskExpected: true }));
      }
    }
    if (where.live) await within(() => this.waitReleased(guest, serverId, volumeId, disk.target));
    // The disk is gone from the guest and the definition: its secret goes too (no other disk
    // uses it: one secret per volume, and a volume attaches to one server).
    const secretUuid = where.live?.encryption?.secretUuid ?? where.config?.encryption?.secretUuid;
    if (secretUuid !== undefined) {
      try {
        await within(() => undefineSecret(this.disks.host.client, secretUuid));
      } catch (err) {
        throw this.disks.mapError(err, { serverId, volumeId, action: 'undefine the secret of the encrypted volume' });
      }
    }
    this.disks.log.info({ serverId, volumeId, device: disk.target, encrypted: secretUuid !== undefined }, 'detached volume');
  }

  /** NOTE: the guest must release the device (ACPI/PCI unplug); libvirt returns before it does. */
  private async waitReleased(guest: Guest, serverId: string, volumeId: string, target: string): Promise<void> {
    const deadline = Date.now() + this.detachTimeoutMs;
    const timings = currentTimings();
    for (;;) {
      let still: boolean;
      try {
        const { info } = await withTimings(timings, () => guest.info({ fresh: true }));
        still = volumeDisks(info).some((d) => d.serial === volumeId);
      } catch (err) {
        throw this.disks.mapError(err, { serverId, volumeId, action: 'detach volume' });
      }
      if (!still) return;
      if (Date.now() >= deadline) {
        throw errors.driverFailed(`instance ${serverId} did not release volume ${volumeId} (${target}) within ${this.detachTimeoutMs} ms`, { final: false });
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
