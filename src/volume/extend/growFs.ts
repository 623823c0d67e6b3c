/**
 * The opt-in that makes an extend grow the guest's filesystem (the workflow's grow_fs step):
 * `{"os-extend": {"new_size": N, "online_extend:grow_fs": true}}` for one extend, or the volume
 * metadata key `online_extend:grow_fs` = "true" for every extend of the volume (so an unmodified
 * client opts a volume in with `openstack volume set --property online_extend:grow_fs=true`).
 * The body wins over the metadata when it says either way.
 */
import { errors } from '../../errors.js';

/** The os-extend option and the volume metadata key. */
export const GROW_FS_KEY = 'online_extend:grow_fs';

/** The metadata values the key takes (any case): what `openstack volume set --property` sends as typed. */
const META_VALUES: Readonly<Record<string, boolean>> = { true: true, false: false };

/**
 * Whether an extend grows the guest's filesystem: `body` (the os-extend option) when given, else
 * the volume's metadata key, else no. Throws BadRequest (400) naming the key for a metadata
 * value other than "true" or "false" (a value stored before it was checked), before anything changes.
 */
export function growFsRequested(body: boolean | undefined, metadata: Readonly<Record<string, string>> | undefined): boolean {
  if (body !== undefined) return body;
  const value = metadata?.[GROW_FS_KEY];
  if (value === undefined) return false;
  return metadataValue(value);
}

/**
 * Checks the key in metadata about to be stored (create, update, set): BadRequest (400) for a
 * value other than "true" or "false" (any case), so a typo never silently means "no".
 */
export function checkGrowFsMetadata(metadata: Readonly<Record<string, string>> | null | undefined): void {
  const value = metadata?.[GROW_FS_KEY];
  if (value !== undefined) metadataValue(value);
}

function metadataValue(value: string): boolean {
  const b = META_VALUES[value.toLowerCase()];
  if (b === undefined) throw errors.invalidInput(`Invalid input for metadata ${GROW_FS_KEY}: ${JSON.stringify(value.slice(0, 64))} is not "true" or "false".`);
  return b;
}
