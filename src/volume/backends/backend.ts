/**
 * The volume service's storage backends (Cinder's volume drivers): one interface, implemented by
 * `FileBackend` (raw/qcow2 files, Nova's NFS way), `BlockBackend` (a loop device over a file,
 * standing in for LVM) and `IscsiBackend` (a file exported as LUN 1 of its own tgt target).
 *
 * No backend keeps state of its own: every name is derived from the volume id (file
 * `<dir>/<volumeId>.raw|.qcow2`, the loop device via `losetup -j FILE`, the IQN
 * `iqn.2026-11.dev.online-extend:<volumeId>` and its tid via `tgtadm --op show`). So every
 * operation is idempotent and a restarted volume service resumes any step by calling it again.
 */
import type { AttachSpec } from '../../virt/driver.js';

/** The encryption formats a volume may have (Cinder's encryption `provider`: QEMU-native LUKS, luks.ts). */
export type EncryptionFormat = 'luks';
/** Every EncryptionFormat, for validation. */
export const ENCRYPTION_FORMATS: readonly EncryptionFormat[] = ['luks'];

/** An encrypted volume as its header describes it: where the payload (what the guest sees) starts, in bytes. */
export interface VolumeEncryption {
  format: EncryptionFormat;
  payloadOffset: number;
}

/** A volume as a backend made it: its id, its size in bytes, and how a compute host attaches it (Cinder's connection_info). */
export interface BackendVolume {
  volumeId: string;
  bytes: number;
  connection: AttachSpec;
  /** Set for an encrypted volume: its LUKS header's payload offset (the guest sees `bytes - payloadOffset`). */
  encryption?: VolumeEncryption;
}

/**
 * What a backend finds where a volume's storage belongs (`VolumeBackend.inspectStorage`): facts
 * only, no judgement. Whether that is the volume's storage is decided once, for every backend, by
 * storageChecked.ts (a regular file, not empty, longer than its LUKS header when encrypted).
 */
export interface StorageInspection {
  /** Where the storage belongs on this host (a path): operator-only, for errors' `detail` and the log, never a message. */
  path: string;
  /** What is there: nothing, a regular file, a directory, or anything else (a device, a socket, a FIFO). Symlinks are followed. */
  type: 'absent' | 'file' | 'directory' | 'other';
  /** Its size in bytes (a regular file's length; 0 for anything else). */
  bytes: number;
}

/**
 * Options of `VolumeBackend.create`: the file backend's image format, and encryption (QEMU-native
 * LUKS with the given base64 passphrase, luks.ts). An encrypted volume is raw underneath (a qcow2
 * one is refused with InvalidInput).
 */
export interface CreateOptions {
  format?: 'raw' | 'qcow2';
  encryption?: { format: 'luks'; passphrase: string };
}

/**
 * A storage backend (Cinder's volume driver). Sizes are bytes, multiples of 512. Methods throw ServiceErrors:
 * InvalidInput (400) for a bad id or size, SizeLimitExceeded (400), VolumeShrinkRefused (400), VolumeNotFound (404),
 * VolumeInvalidState (409: `create` of an existing volume with another size or format), BackendFailed (500, final or
 * uncertain by errno).
 */
export interface VolumeBackend {
  readonly name: string; // 'file' | 'block' | 'iscsi'
  /**
   * Who grows an ATTACHED volume's storage while its guest runs: `storage` — this backend
   * (`extend`), then the compute host rescans (block, iSCSI; Cinder + os-brick); `hypervisor` —
   * QEMU grows it itself through the resize, since it has the file open (file volumes, Nova's NFS).
   * A stopped guest holds nothing open, so offline extends always go through `extend`.
   */
  readonly attachedGrowth: 'storage' | 'hypervisor';
  /**
   * The largest volume this backend can hold, in bytes, measured on its storage (the largest file
   * its filesystem takes, or the image format's own limit). Callers refuse larger sizes up front
   * with errors.sizeLimitExceeded; `create` and `extend` also refuse them, before touching anything.
   */
  maxBytes(opts?: { format?: 'raw' | 'qcow2' }): Promise<number>;
  /**
   * Create a volume of exactly `bytes` (multiple of 512) on the storage; encrypted ones hold their
   * LUKS header in those bytes (luks.ts). Idempotent for the same id, size and encryption.
   */
  create(volumeId: string, bytes: number, opts?: CreateOptions): Promise<BackendVolume>;
  /** Grow to `bytes`; returns the size measured afterwards. Idempotent: already at `bytes` → no-op. Below current → errors.shrinkRefused, nothing touched. */
  extend(volumeId: string, bytes: number): Promise<number>;
  /** Size measured now on the storage. volumeNotFound if absent. */
  getBytes(volumeId: string): Promise<number>;
  /** How a compute host reaches the volume (AttachSpec from src/virt/driver.ts). */
  connection(volumeId: string): Promise<AttachSpec>;
  /**
   * What is where the volume's storage belongs, now (StorageInspection: the path, what kind of
   * entry, its size). Answers `absent` rather than throwing when nothing is there; InvalidInput
   * (400) for an id that cannot name storage, BackendFailed (by errno) when it cannot be looked at.
   * `format`: the volume's recorded image format, where a backend has several (file: raw or qcow2);
   * without it, the first entry found for any format (or the default format's path when none).
   */
  inspectStorage(volumeId: string, opts?: { format?: 'raw' | 'qcow2' }): Promise<StorageInspection>;
  /** Remove it and everything it holds (loop device, iSCSI target). Idempotent. */
  delete(volumeId: string): Promise<void>;
  exists(volumeId: string): Promise<boolean>;
}
