/**
 * Debian's python-novaclient, posting server external events exactly as Cinder does
 * (nova_external_event.py: novaclient's own API at 2.51 on a keystoneauth1 token_endpoint session).
 */
import { execFile, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DEBIAN_PYTHON_ENV } from './tempestSchemas.js';

const SCRIPT = join(import.meta.dirname, 'nova_external_event.py');

/** Why python-novaclient cannot be used here, or undefined. */
export function novaclientMissing(): string | undefined {
  const r = spawnSync('/usr/bin/python3', ['-c', 'import novaclient.client, keystoneauth1.token_endpoint'], { env: DEBIAN_PYTHON_ENV });
  return r.status === 0 ? undefined : "Debian's python3-novaclient is not installed";
}

/**
 * Runs the script (asynchronously: the service answering it runs in this process); answers what
 * novaclient answered (it raises on a 4xx or 5xx, and the script then fails).
 */
export async function novaPost(url: string, token: string, events: unknown[]): Promise<{ events: Array<Record<string, unknown>>; api_version: string }> {
  const { stdout } = await promisify(execFile)('/usr/bin/python3', [SCRIPT, `${url}/v2.1`, token, JSON.stringify(events)], { env: DEBIAN_PYTHON_ENV, timeout: 60_000 });
  return JSON.parse(stdout) as { events: Array<Record<string, unknown>>; api_version: string };
}
