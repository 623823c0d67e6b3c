/** The open-files limit and the HTTP connection cap derived from it (config key httpMaxConnections). */
import { readFileSync } from 'node:fs';

/** File descriptors kept for everything but HTTP connections (database, hypervisor, storage, logs). */
export const FD_RESERVE = 128;

/**
 * The connection cap of one API: `configured` if above 0, else the soft open-files limit less
 * FD_RESERVE, shared between `apis` servers (at least 16 each). Throws Error when a configured cap
 * does not fit under the open-files limit: the cap would never be reached before EMFILE.
 */
export function maxConnectionsPerApi(configured: number, apis: number, fdLimit: number | undefined = softFdLimit()): number {
  const n = Math.max(1, apis);
  if (configured > 0) {
    if (fdLimit !== undefined && configured * n + FD_RESERVE > fdLimit) {
      throw new Error(
        `config httpMaxConnections: ${configured} per API × ${n} API(s) + ${FD_RESERVE} reserved is above the open-files limit ${fdLimit}; lower it or raise \`ulimit -n\``,
      );
    }
    return configured;
  }
  return Math.max(16, Math.floor(((fdLimit ?? 1024) - FD_RESERVE) / n));
}

/** The soft RLIMIT_NOFILE of this process (Linux), or undefined where it cannot be read. */
export function softFdLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (!m) return undefined;
    return m[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(m[1]);
  } catch {
    return undefined;
  }
}
