/**
 * The volume layer's view of its backends: every action on an existing volume's storage (extend,
 * getBytes, connection, inspectStorage) first makes sure the storage is there, and answers
 * VolumeStorageMissing (500, final) when it is not: the volume layer only asks about volumes whose
 * record exists, so storage that is not there was removed or replaced by hand. Never a 404 for a
 * volume the API lists, and never an action on whatever stands in its place.
 *
 * "Storage present" is decided here, once, for every backend (each backend only reports what is
 * at the path its volume's storage lives at: `inspectStorage`). In every backend of this service
 * a volume's storage is a file: the file volume itself (`.raw` or `.qcow2`), the backing file of
 * the loop device (block) or of the LUN (iSCSI). It is present when that path holds
 *   - a regular file (symlinks followed): not nothing, a directory, a device, a socket or a FIFO;
 *   - that is not empty: no volume has 0 bytes (sizes are positive multiples of 512);
 *   - and, for an encrypted volume (its record says LUKS), longer than its LUKS header (the record's
 *     payload offset): what is left is what the guest sees.
 * The contents are not read: an unencrypted volume's bytes are the guest's, a LUKS header in them
 * means nothing to us. A file of some other length (a volume truncated by hand) still counts as
 * present: sizes are measured by the actions themselves and shrinks refused there.
 *
 * The error's public message names the volume and its backend, never a path; its `detail`
 * (logged, never sent) names the path and what was found there, so an operator finds it.
 * A backend's own VolumeNotFound from the action (the storage vanished between the check and the
 * action) is turned into VolumeStorageMissing too.
 */
import { errors, isServiceError } from '../../errors.js';
import type { StorageInspection, VolumeBackend } from './backend.js';

/**
 * What the check reads of a volume's record: its image format (which file holds a file volume)
 * and its encryption. A structural slice of the store's VolumeRecord (backends never import the store).
 */
export interface StorageRecord {
  format?: 'raw' | 'qcow2' | null;
  encryption?: string | null;
  payloadOffset?: number | null;
}

/** Where the check reads volume records (the volume store). */
export interface StorageRecords {
  getVolume(volumeId: string): Promise<StorageRecord | undefined>;
}

/** The methods that act on an existing volume's storage (create makes it; delete and exists take its absence as an answer). */
const OF_EXISTING = new Set<PropertyKey>(['extend', 'getBytes', 'connection']);

/**
 * Why `found` is not the storage of a volume recorded as `record` (see the module comment), in an
 * operator's words; undefined when it is.
 */
export function notStorage(found: StorageInspection, record: StorageRecord | undefined): string | undefined {
  switch (found.type) {
    case 'absent':
      return 'no such file';
    case 'directory':
      return 'a directory stands there instead of the volume file';
    case 'other':
      return 'not a regular file (a device, socket or FIFO stands there)';
    case 'file':
      break;
  }
  if (found.bytes === 0) return 'the file is empty (0 bytes)';
  const header = record?.encryption ? record.payloadOffset : undefined;
  if (typeof header === 'number' && found.bytes <= header) {
    return `the file holds ${found.bytes} bytes, no more than the volume's LUKS header (${header} bytes)`;
  }
  return undefined;
}

/**
 * `backends` whose actions on a volume with a record first check its storage (see the module
 * comment), reading the record from `records`; VolumeStorageMissing when it is not there.
 * `inspectStorage` on a checked backend answers only present storage, and throws otherwise.
 */
export function storageChecked(backends: ReadonlyMap<string, VolumeBackend>, records: StorageRecords): ReadonlyMap<string, VolumeBackend> {
  return new Map([...backends].map(([name, backend]) => [name, checked(name, backend, records)]));
}

function checked(name: string, backend: VolumeBackend, records: StorageRecords): VolumeBackend {
  const inspect = async (volumeId: string): Promise<{ found: StorageInspection; problem: string | undefined }> => {
    const record = await records.getVolume(volumeId);
    const found = await backend.inspectStorage(volumeId, record?.format ? { format: record.format } : undefined);
    return { found, problem: notStorage(found, record) };
  };
  const missing = (volumeId: string, found: StorageInspection, problem: string) =>
    errors.volumeStorageMissing(volumeId, name, { detail: `storage of volume ${volumeId} (${name} backend) at ${found.path}: ${problem}` });
  const present = async (volumeId: string): Promise<StorageInspection> => {
    const { found, problem } = await inspect(volumeId);
    if (problem !== undefined) throw missing(volumeId, found, problem);
    return found;
  };
  return new Proxy(backend, {
    get(target, key, receiver) {
      if (key === 'inspectStorage') return present;
      const value: unknown = Reflect.get(target, key, receiver);
      if (typeof value !== 'function' || !OF_EXISTING.has(key)) return value;
      return async (volumeId: string, ...rest: unknown[]) => {
        await present(volumeId);
        try {
          return await (value as (...a: unknown[]) => Promise<unknown>).call(target, volumeId, ...rest);
        } catch (err) {
          if (!isServiceError(err) || err.code !== 'VolumeNotFound') throw err;
          // Gone between the check and the action: say what is there now, as far as it can be seen.
          const now = await inspect(volumeId).catch(() => undefined);
          throw missing(volumeId, now?.found ?? { path: '(unknown)', type: 'absent', bytes: 0 }, now?.problem ?? `vanished during ${String(key)}`);
        }
      };
    },
  });
}
