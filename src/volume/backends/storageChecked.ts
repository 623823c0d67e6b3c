/**
 * The volume layer's view of its backends: a backend answers VolumeNotFound (404) when a volume's
 * storage is absent (its own contract), but the volume layer only asks about volumes whose record
 * exists, so there that answer means the storage went missing (removed by hand): a
 * VolumeStorageMissing (500, final) that says so, never a 404 for a volume the API lists.
 */
import { errors, isServiceError } from '../../errors.js';
import type { VolumeBackend } from './backend.js';

/** The methods that name an existing volume's storage (create makes it; delete and exists take its absence as an answer). */
const OF_EXISTING = new Set<PropertyKey>(['extend', 'getBytes', 'connection']);

/** `backends` with each one's VolumeNotFound, for a volume that has a record, turned into VolumeStorageMissing. */
export function storageChecked(backends: ReadonlyMap<string, VolumeBackend>): ReadonlyMap<string, VolumeBackend> {
  return new Map([...backends].map(([name, backend]) => [name, checked(name, backend)]));
}

function checked(name: string, backend: VolumeBackend): VolumeBackend {
  return new Proxy(backend, {
    get(target, key, receiver) {
      const value: unknown = Reflect.get(target, key, receiver);
      if (typeof value !== 'function' || !OF_EXISTING.has(key)) return value;
      return (volumeId: string, ...rest: unknown[]) =>
        (value as (...a: unknown[]) => Promise<unknown>).call(target, volumeId, ...rest).catch((err: unknown) => {
          throw isServiceError(err) && err.code === 'VolumeNotFound' ? errors.volumeStorageMissing(volumeId, name) : err;
        });
    },
  });
}
