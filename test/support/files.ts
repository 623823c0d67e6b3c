import { createHash } from 'node:crypto';
import { closeSync, openSync, readdirSync, readSync } from 'node:fs';
import { join } from 'node:path';

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

/**
 * A volume's storage file under a service's data dir, searched in every backend's folder: the file
 * volume itself, or the loop device's / LUN's backing file (`<id>.raw`). Throws when there is none.
 */
export function volumeStorageFile(dataDir: string, id: string): string {
  const find = (dir: string): string | undefined => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) {
        const f = find(p);
        if (f) return f;
      } else if (e.name === `${id}.raw`) return p;
    }
    return undefined;
  };
  const f = find(dataDir);
  if (!f) throw new Error(`no storage file for volume ${id}`);
  return f;
}
