/**
 * The volume API on the wire, as OpenStack clients see it: raw HTTP calls (status, headers, the
 * body's exact bytes) at a chosen volume microversion, and a service whose policy lets project
 * members do what Cinder's defaults let them (admin-or-owner), with a member and an admin token
 * in the same project.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SqliteStore } from '../../src/db/sqlite.js';
import { issueToken } from '../../src/auth/tokens.js';
import { makeService, PROJECT, type ServiceHarness } from './service.js';

/** One answer, raw: `text` is the body exactly as sent ('' when there were no bytes). */
export interface WireAnswer {
  status: number;
  headers: Headers;
  text: string;
  /** The parsed body, or null when it is empty. */
  json: unknown;
}

/** Cinder's default rules for what the tests do, admin-or-owner (cinder/policies/volumes.py, volume_actions.py). */
export const MEMBER_POLICY: Record<string, string> = Object.fromEntries(
  ['volume:create', 'volume:get', 'volume:get_all', 'volume:delete', 'volume:update', 'volume:extend', 'volume:extend_attached_volume', 'volume:attach', 'volume:detach'].map((r) => [
    r,
    'role:admin or project_id:%(project_id)s',
  ]),
);

/** A service on the fake driver with MEMBER_POLICY and a `member` token beside the harness's admin `token`. */
export async function makeWireService(): Promise<ServiceHarness & { member: string }> {
  const h = await makeService();
  const policy = join(h.dir, 'policy.json');
  writeFileSync(policy, JSON.stringify(MEMBER_POLICY));
  await h.stop();
  await h.start({ policyFile: policy });
  const db = new SqliteStore(join(h.config.dataDir, 'online-extend.sqlite'));
  const { token } = await issueToken(db, { userId: 'member-user', projectId: PROJECT, roles: ['member'], ttlMs: 3_600_000 });
  await db.close();
  return Object.assign(h, { member: token });
}

/**
 * Calls `method path` on `base` with `token`, at volume microversion `version` (none: no header),
 * sending `body` as JSON (or, as tempest's DELETEs do, only `Content-Type: application/json`).
 */
export async function wire(base: string, method: string, path: string, token: string, version: string | undefined, body?: unknown): Promise<WireAnswer> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: {
      'x-auth-token': token,
      accept: 'application/json',
      'content-type': 'application/json',
      ...(version ? { 'openstack-api-version': `volume ${version}` } : {}),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: text === '' ? null : (JSON.parse(text) as unknown) };
}
