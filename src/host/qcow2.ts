/**
 * The one qcow2 header reader, and the size a guest gets from a file disk.
 *
 * Contract (every function here): sizes are in bytes; a file that cannot be read rejects with the
 * Node.js system error (its errno: ENOENT, EACCES, …, classified by the caller with
 * src/util/errno.ts); a readable file whose header is not qcow2's rejects with NotQcow2Image.
 * Callers that treat a missing file as "no volume" test for ENOENT themselves.
 *
 * Reading the header needs no lock, so it works while QEMU holds the image open (`qemu-img info`
 * would need `-U` there, and a process per call). Header layout: QEMU's docs/interop/qcow2.txt —
 * magic "QFI\xfb" at offset 0, virtual size as a big-endian u64 at offset 24.
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';

/** "QFI\xfb", the first four bytes of every qcow2 image. */
export const QCOW2_MAGIC = 0x514649fb;
/** Bytes of the header read: magic (0..3) through the virtual size (24..31). */
const HEADER_BYTES = 32;

/** A readable file that is not a qcow2 image (short, or another magic). Carries no errno. */
export class NotQcow2Image extends Error {
  constructor(readonly path: string) {
    super('the file is not a qcow2 image');
    this.name = 'NotQcow2Image';
  }
}

/** The virtual size in bytes from the first 32 bytes of a qcow2 image; NotQcow2Image otherwise. */
export function parseQcow2VirtualBytes(header: Buffer, path = ''): number {
  if (header.length < HEADER_BYTES || header.readUInt32BE(0) !== QCOW2_MAGIC) throw new NotQcow2Image(path);
  return Number(header.readBigUInt64BE(24));
}

/** The virtual size of the qcow2 image at `path`, in bytes. Rejects: system error, NotQcow2Image. */
export async function qcow2VirtualBytes(path: string): Promise<number> {
  const fh = await open(path, 'r');
  try {
    const header = Buffer.alloc(HEADER_BYTES);
    const { bytesRead } = await fh.read(header, 0, HEADER_BYTES, 0);
    return parseQcow2VirtualBytes(header.subarray(0, bytesRead), path);
  } finally {
    await fh.close();
  }
}

/** `qcow2VirtualBytes`, synchronously (one 32-byte read). Throws: system error, NotQcow2Image. */
export function qcow2VirtualBytesSync(path: string): number {
  const fd = openSync(path, 'r');
  try {
    const header = Buffer.alloc(HEADER_BYTES);
    const n = readSync(fd, header, 0, HEADER_BYTES, 0);
    return parseQcow2VirtualBytes(header.subarray(0, n), path);
  } finally {
    closeSync(fd);
  }
}

/** The formats of a file disk QEMU opens here. */
export type DiskFileFormat = 'raw' | 'qcow2';

/** Size in bytes a guest gets from a file disk: the file size for raw, the virtual size for qcow2. */
export async function fileDiskBytes(path: string, format: DiskFileFormat = 'raw'): Promise<number> {
  if (format === 'qcow2') return qcow2VirtualBytes(path);
  return (await stat(path)).size;
}

/** `fileDiskBytes`, synchronously (a 32-byte header read or a stat). */
export function fileDiskBytesSync(path: string, format: DiskFileFormat = 'raw'): number {
  if (format === 'qcow2') return qcow2VirtualBytesSync(path);
  return statSync(path).size;
}
