/**
 * Encrypted volumes at the volume service (Cinder's encrypted volume types): how a create names
 * one, what a backend is asked to make, and the sizes the guest sees.
 *
 * - A create is encrypted by `encryption: "luks"` (ours) or by an encrypted volume type: `luks`
 *   (the default backend's) or `<backend>-luks` (`file-luks`, `block-luks`, `iscsi-luks`). The
 *   record keeps the backend; the volume type shown for an encrypted volume is `<backend>-luks`.
 * - The passphrase is made here (random per volume), stored with the volume (the store's
 *   `encryption_key`, read only by `getVolumeEncryptionKey`) and handed out only inside the
 *   connection compute plugs in (as Nova gets a volume's key from its key manager): never in a
 *   volume view, a log line or an error.
 * - Sizes: `sizeBytes` is the volume's (its storage, header included: Cinder's `size`); the guest
 *   sees `sizeBytes - payloadOffset` (guestBytes). An extend to N asks compute to grow the guest
 *   to N - payloadOffset, and confirms N by what the guest then sees plus the offset.
 */
import { errors } from '../errors.js';
import type { VolumeRecord } from '../db/store.js';
import { randomBytes } from 'node:crypto';
import { ENCRYPTION_FORMATS, type CreateOptions, type EncryptionFormat } from './backends/backend.js';

/** The suffix of an encrypted volume type's name, and the name of the default backend's. */
export const LUKS_TYPE = 'luks';
const LUKS_SUFFIX = `-${LUKS_TYPE}`;

/**
 * The backend and encryption a create asks for: `volumeType` as given (empty: the default
 * backend; `luks`: the default backend, encrypted; `<backend>-luks`: that backend, encrypted) and
 * the `encryption` field. InvalidInput (400) for an encryption format we do not have.
 * `isBackend` says whether a name is a configured backend (a backend named `x-luks` wins).
 */
export function parseVolumeType(
  volumeType: string,
  encryption: string | undefined,
  isBackend: (name: string) => boolean,
): { backend: string; encryption: EncryptionFormat | undefined } {
  if (encryption !== undefined && !ENCRYPTION_FORMATS.includes(encryption as EncryptionFormat)) {
    throw errors.invalidInput(`Unknown volume encryption "${encryption}"; available: ${ENCRYPTION_FORMATS.join(', ')}.`);
  }
  let backend = volumeType;
  let enc = encryption as EncryptionFormat | undefined;
  if (!isBackend(volumeType)) {
    if (volumeType === LUKS_TYPE) {
      backend = '';
      enc = 'luks';
    } else if (volumeType.length > LUKS_SUFFIX.length && volumeType.endsWith(LUKS_SUFFIX)) {
      backend = volumeType.slice(0, -LUKS_SUFFIX.length);
      enc = 'luks';
    }
  }
  return { backend, encryption: enc };
}

/**
 * Every volume type a create accepts with `backends` configured, for messages: each backend and
 * its encrypted `<backend>-luks`, then `luks` (the default backend's, encrypted).
 */
export function volumeTypeNames(backends: readonly string[]): string[] {
  return [...backends.flatMap((b) => [b, `${b}${LUKS_SUFFIX}`]), LUKS_TYPE];
}

/** The volume type a volume shows: its backend, `-luks` when encrypted. */
export function volumeTypeOf(v: Pick<VolumeRecord, 'backend' | 'encryption'>): string {
  return v.encryption ? `${v.backend}${LUKS_SUFFIX}` : v.backend;
}

/** Bytes the guest sees of a volume of `sizeBytes` (its whole size when unencrypted). */
export function guestBytesOf(v: Pick<VolumeRecord, 'encryption' | 'payloadOffset'>, sizeBytes: number): number {
  return sizeBytes - payloadOffsetOf(v);
}

/** The volume's LUKS payload offset in bytes; 0 unencrypted. FinalError if encrypted but not recorded (a volume never made). */
export function payloadOffsetOf(v: Pick<VolumeRecord, 'encryption' | 'payloadOffset'>): number {
  if (!v.encryption) return 0;
  if (v.payloadOffset === null || v.payloadOffset === undefined) {
    throw errors.internal('the encrypted volume has no recorded payload offset (it was never made)', { final: true });
  }
  return v.payloadOffset;
}

/** What to ask a backend's `create` for (the recorded format, the encryption with its passphrase). */
export function createOptions(v: Pick<VolumeRecord, 'format' | 'encryption'>, passphrase: string | undefined): CreateOptions | undefined {
  if (v.encryption && passphrase === undefined) {
    throw errors.internal('the encrypted volume has no stored passphrase', { final: true });
  }
  const opts: CreateOptions = {
    ...(v.format ? { format: v.format } : {}),
    ...(v.encryption && passphrase !== undefined ? { encryption: { format: v.encryption, passphrase } } : {}),
  };
  return Object.keys(opts).length > 0 ? opts : undefined;
}

/**
 * A new random passphrase: 32 random bytes as base64 text (QEMU wants a LUKS passphrase in UTF-8),
 * used as it is by qemu-img, the store and the libvirt secret's value.
 */
export function newPassphrase(): string {
  return randomBytes(32).toString('base64');
}
