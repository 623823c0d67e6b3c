import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';

/** md5 of the first `bytes` bytes of a file, to check from the host what a guest wrote. */
export function fileHeadMd5(file: string, bytes: number): string {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(bytes);
    readSync(fd, buf, 0, bytes, 0);
    return createHash('md5').update(buf).digest('hex');
  } finally {
    closeSync(fd);
  }
}
