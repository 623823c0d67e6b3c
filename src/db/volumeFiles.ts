/**
 * The volume files of a data dir (`volumes/<backend>/<volumeId>.raw|.qcow2`) against the volumes
 * the database knows: orphaned files, and volumes whose storage should exist but has no file.
 */
import Database from 'better-sqlite3';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { VOLUME_FILE, VOLUMES_DIR } from './dataDirLayout.js';

/** A volume's backing file: `volumes/<backend>/<volumeId>.raw|.qcow2`. */
export interface VolumeFile {
  backend: string;
  /** The file's name in its backend's directory. */
  name: string;
  volumeId: string;
}

/**
 * The volume files under `DATA_DIR/volumes/<backend>/` of every backend directory present
 * (enabled or not: a backend switched off still has its volumes in the database), sorted by
 * backend and name. Half-made files (`*.tmp-*`, what a crash during create leaves) and names no
 * backend makes are left out.
 */
export function volumeFiles(dir: string): VolumeFile[] {
  const root = join(dir, VOLUMES_DIR);
  const out: VolumeFile[] = [];
  let backends;
  try {
    backends = readdirSync(root, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
    throw err;
  }
  for (const b of backends) {
    if (!b.isDirectory()) continue;
    // withFileTypes: one getdents per directory, no stat per file (10,000 files in a few ms).
    for (const f of readdirSync(join(root, b.name), { withFileTypes: true })) {
      if (f.isDirectory() || f.name.includes('.tmp-')) continue;
      const m = VOLUME_FILE.exec(f.name);
      if (m) out.push({ backend: b.name, name: f.name, volumeId: m[1]! });
    }
  }
  // Directory order is the filesystem's: sorted, messages name the same files every time.
  return out.sort((x, y) => (x.backend === y.backend ? (x.name < y.name ? -1 : x.name > y.name ? 1 : 0) : x.backend < y.backend ? -1 : 1));
}

/** Statuses in which a volume's storage exists (created, not being deleted). */
const HAS_STORAGE = new Set(['available', 'attaching', 'in-use', 'detaching', 'extending', 'error_extending']);

/** What the start-up check of volume files against the database found. */
export interface VolumeCheck {
  /** Volume files found under `volumes/`. */
  files: number;
  /** Volumes the database knows. */
  volumes: number;
  /** Files whose volume the database does not know. */
  orphans: VolumeFile[];
  /** Volumes whose status says their storage exists, with no file under any backend (ids). */
  withoutFile: string[];
}

/** Compare the volume files with the volumes in the database at `path` (read only). */
export function checkVolumeFiles(dir: string, path: string): VolumeCheck {
  const files = volumeFiles(dir);
  const known = new Map<string, string>();
  if (existsSync(path) && statSync(path).size > 0) {
    const db = new Database(path, { fileMustExist: true, timeout: 5000 });
    try {
      const hasVolumes = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'volumes'").get() !== undefined;
      if (hasVolumes) for (const [id, status] of db.prepare('SELECT id, status FROM volumes').raw().all() as Array<[string, string]>) known.set(id, status);
    } finally {
      db.close();
    }
  }
  const withFile = new Set(files.map((f) => f.volumeId));
  const withoutFile: string[] = [];
  for (const [id, status] of known) if (HAS_STORAGE.has(status) && !withFile.has(id)) withoutFile.push(id);
  return { files: files.length, volumes: known.size, orphans: files.filter((f) => !known.has(f.volumeId)), withoutFile };
}
