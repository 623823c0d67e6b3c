/**
 * One `serve` per data dir: an OS lock (fcntl, through SQLite) that the kernel drops when the
 * holder dies, so a restart right after `kill -9` works at once.
 */
import Database from 'better-sqlite3';
import { chmodSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writePrivateFile } from '../util/privateFile.js';
import { DataDirError, DIR_MODE, FILE_MODE, LOCK_FILE, PID_FILE } from './dataDirLayout.js';

/** The data dir's `serve` lock, held by this process until `release` or exit. */
export interface DataDirLock {
  /** This process's pid, as recorded in `serve.pid`. */
  readonly pid: number;
  /** Give the data dir up (idempotent). The kernel also drops the lock if the process dies. */
  release(): void;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readPid(dir: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(dir, PID_FILE), 'utf8').trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Take the data dir for this process, or throw DataDirError `DataDirLocked` naming the holder's pid.
 *
 * The lock is SQLite's own file lock (POSIX fcntl) on `serve.lock`, held for the life of the
 * process by an exclusive-mode connection with an open exclusive transaction: the kernel releases
 * it when the process ends, however it ends, so there is no staleness to guess. A second
 * connection in the same process is refused too (SQLite tracks its locks per file across
 * connections). `token create` and other CLI commands use the database itself, which this lock
 * does not cover, so they keep working while `serve` runs.
 *
 * NOTE: the lock file must never be opened and closed through `fs` in the holding process: closing
 * any descriptor of a file drops the process's fcntl locks on it. Only `chmod` by path is used.
 */
export function lockDataDir(dir: string): DataDirLock {
  mkdirSync(dir, { recursive: true, mode: DIR_MODE });
  const lockPath = join(dir, LOCK_FILE);
  const db = new Database(lockPath, { timeout: 0 });
  chmodSync(lockPath, FILE_MODE);
  try {
    // No journal file: nothing is ever written to the lock's database.
    db.pragma('journal_mode = MEMORY');
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code !== 'SQLITE_BUSY') throw err;
    // The holder writes its pid right after taking the lock: if the file still names a dead
    // process, give the new holder a moment to write its own.
    let pid = readPid(dir);
    for (let i = 0; i < 25 && (pid === undefined || !isAlive(pid)); i++) {
      sleepSync(20);
      pid = readPid(dir);
    }
    const who = pid === undefined ? 'another process' : `process ${pid}`;
    throw new DataDirError(
      'DataDirLocked',
      `the data dir ${dir} is in use by ${who} (an online-extend serve): only one serve may use a data dir. ` +
        `Stop that one first, or give this one another --data-dir.`,
      { dataDir: dir, ...(pid === undefined ? {} : { pid }) },
    );
  }
  writePrivateFile(join(dir, PID_FILE), `${process.pid}\n`);
  let held = true;
  return {
    pid: process.pid,
    release() {
      if (!held) return;
      held = false;
      if (readPid(dir) === process.pid) rmSync(join(dir, PID_FILE), { force: true });
      db.exec('ROLLBACK');
      db.close();
    },
  };
}
