/**
 * The LUKS1 header of a volume's storage (a file or a block device), read directly: where the
 * payload the guest sees starts. QEMU-native LUKS volumes are LUKS1 (`qemu-img create -f luks`).
 * Reading needs no lock (QEMU's are advisory), so it works while a guest has the volume open;
 * the guest cannot change the header, which lies before everything it sees.
 */
import { open } from 'node:fs/promises';
import { errnoOf } from '../util/errno.js';

/** LUKS1's magic, `LUKS\xba\xbe`, at byte 0. */
const LUKS_MAGIC = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]);
/** Bytes read: magic (6), version (2), cipher name and mode, hash spec (32 each), payload offset (4, in 512-byte sectors). */
export const LUKS_HEADER_PREFIX_BYTES = 108;
const PAYLOAD_OFFSET_AT = 104;

/** The payload offset in bytes of the LUKS1 header at the start of `buf`, or undefined if `buf` holds none. */
export function parseLuksPayloadOffset(buf: Buffer): number | undefined {
  if (buf.length < LUKS_HEADER_PREFIX_BYTES || !buf.subarray(0, LUKS_MAGIC.length).equals(LUKS_MAGIC)) return undefined;
  if (buf.readUInt16BE(6) !== 1) return undefined; // LUKS2 keeps its offsets in JSON: not what qemu-img writes
  return buf.readUInt32BE(PAYLOAD_OFFSET_AT) * 512;
}

/**
 * The payload offset in bytes of the LUKS1 header at the start of `path`; undefined when the
 * storage does not start with one or does not exist (ENOENT). Other failures throw the errno error.
 */
export async function readLuksPayloadOffset(path: string): Promise<number | undefined> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const buf = Buffer.alloc(LUKS_HEADER_PREFIX_BYTES);
    const { bytesRead } = await fh.read(buf, 0, LUKS_HEADER_PREFIX_BYTES, 0);
    return parseLuksPayloadOffset(buf.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}
