import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"

/**
 * The virtual size of a qcow2 image, read from its header (bytes 24..31, big-endian).
 * Reading the header needs no lock, so it works while QEMU holds the image open
 * (`qemu-img info` would need `-U` there, and a process per call).
 */
export async function qcow2VirtualBytes(path: string): Promise<number> {
  const fh = await open(path, 'r');
  try {
    const header = Buffer.alloc(32);
    const { bytesRead } = await fh.read(header, 0, 32, 0);
    if (bytesRead < 32 || header.readUInt32BE(0) !== QCOW2_MAGIC) {
      throw new Error(`${path} is not a qcow2 image`);
    }
    return Number(header.readBigUInt64BE(24));
  } finally {
    await fh.close();
  }
}

/** Size a guest would get from a file disk: the file size for raw, the virtual size for qcow2. */
export async function fileDiskBytes(path: string, format: 'raw' | 'qcow2' = 'raw'): Promise<number> {
  if (format === 'qcow2') return qcow2VirtualBytes(path);
  return (await stat(path)).size;
}

/** `fileDiskBytes`, synchronously (a header read of 32 bytes or a stat). */
export function fileDiskBytesSync(path: string, format: 'raw' | 'qcow2' = 'raw'): number {
  if (format !== 'qcow2') return statSync(path).size;
  const fd = openSync(path, 'r');
  try {
    const header = Buffer.alloc(32);
    if (readSync(fd, header, 0, 32, 0) < 32 || header.readUInt32BE(0) !== QCOW2_MAGIC) throw new Error(`${path} is not a qcow2 image`);
    return Number(header.readBigUInt64BE(24));
  } finally {
    closeSync(fd);
  }
}
