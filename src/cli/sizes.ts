import { GiB, KiB, MiB, TiB } from '../util/units.js';

/**
 * Parses sizes like `2GiB`, `512MiB`, `1073741824`, `10G` (binary units: K, Ki, KiB
 * all mean 2^10) into bytes. Throws Error naming the text when it is not a size or not a whole
 * number of bytes.
 */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(b|k|ki|kib|m|mi|mib|g|gi|gib|t|ti|tib)?\s*$/i.exec(text);
  if (!m) throw new Error(`invalid size "${text}" (use e.g. 2GiB, 512MiB or a number of bytes)`);
  const unit = (m[2] ?? 'b').toLowerCase()[0] as 'b' | 'k' | 'm' | 'g' | 't';
  const mult = { b: 1, k: KiB, m: MiB, g: GiB, t: TiB }[unit];
  const bytes = Number(m[1]) * mult;
  if (!Number.isSafeInteger(bytes)) throw new Error(`size "${text}" is not a whole number of bytes`);
  return bytes;
}

export { formatBytesExact as formatBytes } from '../util/units.js';
