/**
 * Size units: the one definition of the binary units (IEC: KiB = 2^10 bytes … TiB = 2^40 bytes)
 * and of the conversions between bytes and GiB that the APIs document.
 *
 * Bytes are the unit of record everywhere (the store's `size_bytes`, the drivers, the backends);
 * GiB appears only at Cinder's edges: a volume's `size` (GiB, rounded down: a volume of
 * 1.5 GiB shows `size: 1`, and `size_bytes` is exact) and `os-extend`'s `new_size` /
 * create's `size` (whole GiB, exact).
 */

/** One kibibyte: 2^10 bytes. */
export const KiB = 2 ** 10;
/** One mebibyte: 2^20 bytes. */
export const MiB = 2 ** 20;
/** One gibibyte: 2^30 bytes (Cinder's unit of volume size). */
export const GiB = 2 ** 30;
/** One tebibyte: 2^40 bytes. */
export const TiB = 2 ** 40;

/**
 * A size in bytes as Cinder's `size` shows it: whole GiB, rounded down (a volume is never shown
 * larger than it is). `bytes` must be a non-negative integer; throws RangeError otherwise.
 */
export function bytesToGiB(bytes: number): number {
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`bytesToGiB: expected a non-negative integer number of bytes, got ${bytes}`);
  return Math.floor(bytes / GiB);
}

/**
 * Whole GiB (Cinder's `size`, `new_size`) in bytes, exactly. Throws RangeError for a value that
 * is not a non-negative integer, or whose bytes are past Number.MAX_SAFE_INTEGER (8 PiB).
 */
export function gibToBytes(gib: number): number {
  const bytes = gib * GiB;
  if (!Number.isSafeInteger(gib) || gib < 0 || !Number.isSafeInteger(bytes)) throw new RangeError(`gibToBytes: expected a non-negative whole number of GiB, got ${gib}`);
  return bytes;
}

/**
 * `bytes` in the largest binary unit that divides it exactly, with no space: `2GiB`, `1536MiB`,
 * `10B` (what the CLI prints and reads back with its size parser: nothing is rounded).
 */
export function formatBytesExact(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (v >= KiB && i < units.length - 1 && v % KiB === 0) {
    v /= KiB;
    i++;
  }
  return `${v}${units[i]}`;
}

/**
 * A size for a reader of an error message: the exact bytes plus the largest binary unit, rounded
 * down to two decimals (a limit of 16 TiB − 4 KiB must not read as "16 TiB"):
 * `17592186040320 bytes (15.99 TiB)`, `512 bytes`.
 */
export function describeBytes(bytes: number): string {
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let u = 'bytes';
  for (const unit of units) {
    if (v < KiB) break;
    v /= KiB;
    u = unit;
  }
  return u === 'bytes' ? `${bytes} bytes` : `${bytes} bytes (${Math.floor(v * 100) / 100} ${u})`;
}
