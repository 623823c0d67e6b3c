/**
 * Tempest as the judge of response shapes: live responses are checked against tempest's own
 * strict schemas (Debian's `tempest` package, run with /usr/bin/python3 by tempest_check.py), so
 * the schemas are never copied into this project. `tempestMissing()` says why it cannot run
 * here (for describeReal); the OpenStack client packages are installed by `.ci/run`.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const CHECKER = join(import.meta.dirname, 'tempest_check.py');
/** Debian's interpreter, with nothing of the caller's Python environment. */
export const DEBIAN_PYTHON_ENV = { PATH: '/usr/bin:/bin', HOME: '/tmp', LANG: 'C.UTF-8' };

/** One response to judge: `schema` is a dotted path under tempest.lib.api_schema.response, e.g. `compute.v2_1.servers.get_server`. */
export interface TempestCase {
  schema: string;
  status: number;
  /** The parsed JSON body, or null for an empty one. */
  body: unknown;
  headers?: Record<string, string>;
}

/** The verdict on one case: `error` is tempest's message when `ok` is false. */
export interface TempestVerdict {
  schema: string;
  ok: boolean;
  error: string | null;
}

/** Why tempest's schemas cannot be used here, or undefined. */
export function tempestMissing(): string | undefined {
  const r = spawnSync('/usr/bin/python3', ['-c', 'import tempest.lib.common.rest_client'], { env: DEBIAN_PYTHON_ENV });
  return r.status === 0 ? undefined : 'Debian tempest package (python3 tempest.lib) is not installed';
}

/** Judges every case with tempest's RestClient.validate_response; one verdict per case, in order. Throws if the checker itself fails. */
export function judge(cases: TempestCase[]): TempestVerdict[] {
  const r = spawnSync('/usr/bin/python3', [CHECKER], { input: JSON.stringify(cases), env: DEBIAN_PYTHON_ENV, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`tempest_check.py failed (${r.status}): ${r.stderr.toString()}`);
  return JSON.parse(r.stdout.toString()) as TempestVerdict[];
}
