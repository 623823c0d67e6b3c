/** Files only this service's user may read: credentials and state in the data dir. */
import { chmodSync, renameSync, writeFileSync } from 'node:fs';

/** Mode of every file in the data dir: guest data and credentials. */
export const PRIVATE_FILE_MODE = 0o600;
/** Mode of every directory in the data dir. */
export const PRIVATE_DIR_MODE = 0o700;

/**
 * Write `text` to `path` atomically (a temp file next to it, then rename), mode 0600 whatever the
 * umask. A reader sees the old content or the new, never a part.
 */
export function writePrivateFile(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode: PRIVATE_FILE_MODE });
  // `mode` applies only when the file is created: a temp file left by a crash keeps its own.
  chmodSync(tmp, PRIVATE_FILE_MODE);
  renameSync(tmp, path);
}
