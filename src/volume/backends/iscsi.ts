/**
 * IscsiBackend: each volume is a sparse raw file `<dir>/<volumeId>.raw` exported by a userspace
 * tgtd as LUN 1 of its own target `iqn.2026-11.dev.online-extend:<volumeId>` (AttachSpec kind
 * `network`, source `IQN/1`, plus the portal). QEMU opens it itself with libiscsi.
 *
 * Nothing is recorded: the target's tid is looked up by IQN in `tgtadm --op show` every time.
 * Each step is idempotent, so any operation can be repeated after a crash: `create` and
 * `connection` (Cinder's ensure_export) bring back a missing target, LUN or ACL; `extend`
 * re-refreshes a LUN whose file was grown before a crash.
 *
 * Extend: grow the file, then refresh LUN 1 (tgt caches the size when the LUN is added: delete
 * and re-add it; ~25 ms, works while QEMU is attached and logged in), then measure. Sizes are
 * measured as an initiator sees them, with `iscsi-readcapacity16` (tgt's own `show` prints
 * rounded decimal megabytes, too coarse).
 *
 * Volume ids must be lowercase `[a-z0-9.-]` here: tgt rejects other IQN characters.
 */
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { errors } from '../../errors.js';
import type { AttachSpec } from '../../virt/driver.js';
import type { BackendVolume, CreateOptions, StorageInspection, VolumeBackend } from './backend.js';
import { checkEncrypted, makeRawVolume } from './luks.js';
import { checkBytes, checkFits, checkVolumeId, rawFileLimit, createAtomically, fileBytes, growVolumeFile, makeSparseFile, removeFile, ensureDir, inspectPath } from './common.js';
import { tgtRequest } from '../../host/tgt.js';
import { Tgt, readCapacity, type TgtTarget } from './tgt.js';
import { KeyedMutex } from '../../util/keyedMutex.js';

export const IQN_PREFIX = 'iqn.2026-11.dev.online-extend:';
export const ISCSI_LUN = 1;
const ISCSI_VOLUME_ID = /^[a-z0-9][a-z0-9.-]{0,127}$/;

/** The volume's target IQN: `IQN_PREFIX` + volume id (the id is checked by `pathOf`, not here). */
export function iqnOf(volumeId: string): string {
  return `${IQN_PREFIX}${volumeId}`;
}

/**
 * Where IscsiBackend keeps its backing files, the portal initiators use, tgtd's control port, and the timeout in ms of
 * each tgtadm and iscsi-readcapacity16 call.
 */
export interface IscsiBackendOptions {
  /** The pool directory holding the backing files (created if missing). */
  dir: string;
  /** The tgtd portal, `host:port` (default 127.0.0.1:3260). */
  portal?: string;
  /** tgtd's control port (`tgtd -C N` / `tgtadm -C N`), if not the default 0. */
  controlPort?: number;
  /** Timeout for each tgtadm / iscsi-readcapacity16 call (default 15 s). */
  timeoutMs?: number;
}

/** Target creation picks "the lowest free tid": serialise it within the process. */
const tidLock = new KeyedMutex();

/**
 * iSCSI volumes (see the file header): a file exported by tgtd as LUN 1 of its own target, attached as a `network` disk.
 * Errors as VolumeBackend's; tgtadm and iscsi-readcapacity16 failures are BackendFailed (tgtd unreachable: uncertain).
 */
export class IscsiBackend implements VolumeBackend {
  readonly name = 'iscsi';
  readonly attachedGrowth = 'storage' as const;
  readonly dir: string;
  readonly portal: string;
  readonly tgt: Tgt;
  private readonly timeoutMs: number;
  private readonly lock = new KeyedMutex();

  constructor(opts: IscsiBackendOptions) {
    this.dir = resolve(opts.dir);
    this.portal = opts.portal ?? '127.0.0.1:3260';
    this.timeoutMs = opts.timeoutMs ?? 15_000;
    this.tgt = new Tgt({ controlPort: opts.controlPort, timeoutMs: this.timeoutMs });
  }

  /** The backing file of a volume. InvalidInput (400) unless the id is lowercase `[a-z0-9.-]` (tgt's IQN alphabet), 1–128 long. */
  pathOf(volumeId: string): string {
    checkVolumeId(volumeId, ISCSI_VOLUME_ID);
    return `${this.dir}/${volumeId}.raw`;
  }

  /** The volume's target as tgtd has it now, if any. */
  async findTarget(volumeId: string): Promise<TgtTarget | undefined> {
    const iqn = iqnOf(volumeId);
    return (await this.tgt.show()).find((t) => t.iqn === iqn);
  }

  private async createTarget(iqn: string): Promise<TgtTarget> {
    return tidLock.run('tid', async () => {
      for (let attempt = 0; attempt < 20; attempt++) {
        const targets = await this.tgt.show();
        const mine = targets.find((t) => t.iqn === iqn);
        if (mine) return mine;
        const used = new Set(targets.map((t) => t.tid));
        let tid = 1;
        while (used.has(tid)) tid++;
        const args = tgtRequest.newTarget(tid, iqn);
        const what = 'create the iSCSI target of the volume';
        const r = await this.tgt.raw(args, what);
        if (r.code === 0) return { tid, iqn, luns: [], acls: [] };
        if (Tgt.unreachable(r)) throw this.tgt.failed(args, r, what);
        // tgtadm exits 22 whatever the reason: look again. Another process took the tid, or made
        // this very target: the next round finds it, or the next free tid. Neither: a refusal.
        const after = await this.tgt.show();
        if (after.some((t) => t.iqn === iqn || t.tid === tid)) continue;
        throw this.tgt.failed(args, r, what);
      }
      // Twenty rounds lost to other creators: they finish in milliseconds, so trying later works.
      throw errors.backendFailed('cannot create the iSCSI target of the volume: no free target id after 20 tries', { final: false, detail: iqn });
    });
  }

  private async addLun(tid: number, file: string): Promise<void> {
    const args = tgtRequest.newLun(tid, ISCSI_LUN, file);
    const what = 'export the volume as an iSCSI LUN';
    const r = await this.tgt.raw(args, what);
    if (r.code === 0) return;
    if (Tgt.unreachable(r)) throw this.tgt.failed(args, r, what);
    // Already there over our file (a concurrent ensure_export added it)? Then that is done.
    const lun = (await this.tgt.show()).find((t) => t.tid === tid)?.luns.find((l) => l.lun === ISCSI_LUN);
    if (lun?.backingPath === file) return;
    throw this.tgt.failed(args, r, what);
  }

  /** Make sure target, LUN 1 over our file and the ALL ACL exist (Cinder's ensure_export). */
  private async ensureExport(volumeId: string): Promise<number> {
    const file = this.pathOf(volumeId);
    const iqn = iqnOf(volumeId);
    const target = (await this.findTarget(volumeId)) ?? (await this.createTarget(iqn));
    const lun = target.luns.find((l) => l.lun === ISCSI_LUN);
    if (lun && lun.backingPath !== file) {
      throw errors.backendFailed(`cannot export volume ${volumeId}: its iSCSI target exports another file as LUN ${ISCSI_LUN}`, {
        detail: `target ${iqn} (tid ${target.tid}) exports ${String(lun.backingPath)} as LUN ${ISCSI_LUN}, not ${file}`,
      });
    }
    if (!lun) await this.addLun(target.tid, file);
    if (!target.acls.includes('ALL')) {
      const args = tgtRequest.bindAll(target.tid);
      const what = 'open the iSCSI target of the volume to initiators';
      const r = await this.tgt.raw(args, what);
      if (r.code !== 0) {
        if (Tgt.unreachable(r)) throw this.tgt.failed(args, r, what);
        const acls = (await this.tgt.show()).find((t) => t.tid === target.tid)?.acls ?? [];
        if (!acls.includes('ALL')) throw this.tgt.failed(args, r, what);
      }
    }
    return target.tid;
  }

  /**
   * tgt caches a LUN's size when it is added: delete and re-add LUN 1 to publish the file's size.
   * A failed delete is judged by looking again: LUN 1 gone → done; the target gone → uncertain
   * (a retry of the step exports it again); LUN 1 still there → it is active, the only refusal
   * tgt has for deleting an existing LUN other than 0 (tgt_device_destroy: commands in flight),
   * which drains in milliseconds: wait and try again, then give up as uncertain.
   */
  async refreshLun(tid: number, file: string): Promise<void> {
    const args = tgtRequest.deleteLun(tid, ISCSI_LUN);
    const what = 'refresh the iSCSI LUN of the volume';
    for (let attempt = 0; ; attempt++) {
      const r = await this.tgt.raw(args, what);
      if (r.code === 0) break;
      if (Tgt.unreachable(r)) throw this.tgt.failed(args, r, what);
      const target = (await this.tgt.show()).find((t) => t.tid === tid);
      if (target && !target.luns.some((l) => l.lun === ISCSI_LUN)) break;
      if (!target || attempt >= 10) throw this.tgt.failed(args, r, what, { final: false });
      await sleep(20);
    }
    await this.addLun(tid, file);
  }

  private measure(volumeId: string): Promise<number> {
    return readCapacity(this.portal, iqnOf(volumeId), ISCSI_LUN, this.timeoutMs);
  }

  private spec(volumeId: string): AttachSpec {
    return { volumeId, kind: 'network', source: `${iqnOf(volumeId)}/${ISCSI_LUN}`, portal: this.portal };
  }

  /** The largest backing file the pool's filesystem holds. */
  maxBytes(): Promise<number> {
    return rawFileLimit(this.dir);
  }

  /**
   * Create the sparse backing file of exactly `bytes` (atomically, 0600) and export it (target, LUN 1, ALL ACL). Idempotent
   * for the same size; another size throws VolumeInvalidState (409). Also InvalidInput, SizeLimitExceeded (400), BackendFailed.
   */
  async create(volumeId: string, bytes: number, opts: CreateOptions = {}): Promise<BackendVolume> {
    const file = this.pathOf(volumeId);
    checkBytes(bytes);
    checkFits(volumeId, bytes, await this.maxBytes(), 'the volume pool (its largest file)');
    return this.lock.run(volumeId, async () => {
      await ensureDir(this.dir);
      if ((await fileBytes(file)) === undefined) {
        await createAtomically(file, (tmp) => makeRawVolume(tmp, bytes, { encryption: opts.encryption, timeoutMs: 60_000, volumeId }, makeSparseFile));
      }
      const have = await fileBytes(file);
      if (have !== bytes) {
        throw errors.volumeInvalidState(volumeId, `already created with ${String(have)} bytes`, `create with ${bytes} bytes`);
      }
      const encryption = await checkEncrypted(volumeId, file, opts.encryption);
      await this.ensureExport(volumeId);
      return { volumeId, bytes, connection: this.spec(volumeId), ...(encryption ? { encryption } : {}) };
    });
  }

  /**
   * Grow the file to `bytes`, then refresh LUN 1 whenever the exported size lags the file; returns the LUN capacity in bytes
   * an initiator reads afterwards. VolumeNotFound (404) without a file, VolumeShrinkRefused (400) below its size.
   */
  async extend(volumeId: string, bytes: number): Promise<number> {
    const file = this.pathOf(volumeId);
    checkBytes(bytes);
    checkFits(volumeId, bytes, await this.maxBytes(), 'the volume pool (its largest file)');
    return this.lock.run(volumeId, async () => {
      const current = await fileBytes(file);
      if (current === undefined) throw errors.volumeNotFound(volumeId);
      if (bytes < current) throw errors.shrinkRefused(volumeId, bytes, current, 'the volume has');
      // Measure first: an extend to the current size then costs one READ CAPACITY and no tgtadm.
      let exported = await this.measure(volumeId).catch(() => undefined);
      let tid: number | undefined;
      if (exported === undefined) {
        tid = await this.ensureExport(volumeId);
        exported = await this.measure(volumeId);
      }
      if (bytes > current) await growVolumeFile(file, bytes, volumeId);
      const fileNow = (await fileBytes(file)) ?? 0;
      // Refresh whenever the LUN lags the file: also resumes an extend that crashed after growing.
      if (exported !== fileNow) {
        tid ??= await this.ensureExport(volumeId);
        await this.refreshLun(tid, file);
        exported = await this.measure(volumeId);
      }
      return exported;
    });
  }

  /** The LUN's capacity as an initiator sees it now. */
  async getBytes(volumeId: string): Promise<number> {
    const file = this.pathOf(volumeId);
    if ((await fileBytes(file)) === undefined) throw errors.volumeNotFound(volumeId);
    try {
      return await this.measure(volumeId);
    } catch (err) {
      const target = await this.findTarget(volumeId).catch(() => undefined);
      if (target && !target.luns.some((l) => l.lun === ISCSI_LUN)) {
        throw errors.backendFailed(`volume ${volumeId} has no LUN ${ISCSI_LUN} on ${iqnOf(volumeId)}; connection() re-exports it`, { final: false, cause: err });
      }
      if (target === undefined) {
        const down = await this.tgt.show().then(() => false, () => true);
        if (!down) {
          throw errors.backendFailed(`volume ${volumeId} is not exported (no target ${iqnOf(volumeId)}); connection() re-exports it`, { final: false, cause: err });
        }
      }
      throw err;
    }
  }

  /**
   * A `network` AttachSpec (`IQN/1` and the portal), re-exporting the volume if its target, LUN or ACL is missing (Cinder's
   * ensure_export). VolumeNotFound (404) without a file.
   */
  async connection(volumeId: string): Promise<AttachSpec> {
    const file = this.pathOf(volumeId);
    return this.lock.run(volumeId, async () => {
      if ((await fileBytes(file)) === undefined) throw errors.volumeNotFound(volumeId);
      await this.ensureExport(volumeId);
      return this.spec(volumeId);
    });
  }

  /** What is at the volume's backing file (StorageInspection). InvalidInput (400) for a bad id, BackendFailed when it cannot be looked at. */
  async inspectStorage(volumeId: string): Promise<StorageInspection> {
    return inspectPath(this.pathOf(volumeId));
  }

  /** Delete the volume's target (forced, even with initiators logged in), then its file. Idempotent. */
  async delete(volumeId: string): Promise<void> {
    const file = this.pathOf(volumeId);
    return this.lock.run(volumeId, async () => {
      const target = await this.findTarget(volumeId);
      if (target) {
        const args = tgtRequest.deleteTarget(target.tid, { force: true });
        const what = 'delete the iSCSI target of the volume';
        const r = await this.tgt.raw(args, what);
        if (r.code !== 0) {
          if (Tgt.unreachable(r)) throw this.tgt.failed(args, r, what);
          // Gone already (a concurrent delete)? Then that is done.
          if ((await this.findTarget(volumeId)) !== undefined) throw this.tgt.failed(args, r, what);
        }
      }
      await removeFile(file);
    });
  }

  /** Whether the backing file exists. InvalidInput (400) for an id outside the iSCSI alphabet. */
  async exists(volumeId: string): Promise<boolean> {
    return (await fileBytes(this.pathOf(volumeId))) !== undefined;
  }
}
