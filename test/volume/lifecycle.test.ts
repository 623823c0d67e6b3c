/**
 * The lifecycle table, cell by cell, through the real APIs: every volume action × every status ×
 * attached or not. A volume is made (and attached, for the attached cells) through the APIs, put
 * in the cell's status directly in the database, and the action is asked for over HTTP. Allowed
 * cells must do what the table says; refused ones must answer the table's error and change
 * nothing: the record (down to its version), the file on disk and the hypervisor's disks.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { ApiError } from '../../src/rpc/httpClient.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import type { ExtendState, VolumeRecord, VolumeStatus } from '../../src/db/store.js';
import { LIFECYCLE, VOLUME_ACTIONS, VOLUME_STATUSES, type VolumeAction } from '../../src/volume/lifecycle.js';
import type { FakeDriver } from '../../src/virt/fake/driver.js';
import { makeService, PROJECT, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
const SERVERS = Array.from({ length: 8 }, (_, i) => `5d7e0c4a-2222-4a22-9b33-0c4d5e6f7a${String(i).padStart(2, '0')}`);
const OTHER_SERVER = '5d7e0c4a-3333-4a22-9b33-0c4d5e6f7a8b';

let h: ServiceHarness;
let db: SqliteStore;
let nextServer = 0;

beforeAll(async () => {
  h = await makeService({
    inventory: {
      servers: [...SERVERS, OTHER_SERVER].map((id, i) => ({ id, name: `vm-${i}`, project_id: PROJECT, state: 'active', disks: [] })),
    },
    // The watchdog would put the statuses this test forces back at rest: keep it out of the way.
    config: { extendWatchdogMs: 3_600_000 },
  });
  db = new SqliteStore(join(h.config.dataDir, 'online-extend.sqlite'));
});
afterAll(async () => {
  await db?.close();
  await h?.cleanup();
});

const fakeExtend = (target: number): ExtendState => ({
  requestId: 'req-forced',
  targetBytes: target,
  step: 'assist',
  startedAt: new Date().toISOString(),
  deadline: new Date(Date.now() + 3_600_000).toISOString(),
  attempts: 0,
  hostBytes: null,
  error: 'forced by the test',
  mode: 'online',
  lastError: null,
});

async function volumeIn(status: VolumeStatus, attached: boolean): Promise<{ v: VolumeRecord; server: string | undefined }> {
  const created = (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: `${status}-${attached}`, size_bytes: 64 * MiB } })).body.volume;
  let server: string | undefined;
  if (attached) {
    server = SERVERS[nextServer++ % SERVERS.length]!;
    await h.compute.request('POST', `/v2/${PROJECT}/servers/${server}/os-volume_attachments`, { volumeAttachment: { volumeId: created.id } });
  }
  const forced = status === 'extending' || status === 'error_extending' ? { extend: fakeExtend(128 * MiB) } : {};
  expect(await db.updateVolume(created.id, {}, { status, ...forced })).toBe(true);
  return { v: (await db.getVolume(created.id))!, server };
}

function ask(action: VolumeAction, v: VolumeRecord, server: string | undefined): Promise<unknown> {
  switch (action) {
    case 'attach':
      // An attached volume is offered to another server.
      return h.compute.request('POST', `/v2/${PROJECT}/servers/${OTHER_SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: v.id } });
    case 'detach':
      return h.compute.request('DELETE', `/v2/${PROJECT}/servers/${server ?? SERVERS[0]}/os-volume_attachments/${v.id}`);
    case 'extend':
      return h.volume.request('POST', `/v3/${PROJECT}/volumes/${v.id}/action`, { 'os-extend-bytes': { new_bytes: v.sizeBytes + 64 * MiB } });
    case 'delete':
      return h.volume.request('DELETE', `/v3/${PROJECT}/volumes/${v.id}`);
  }
}

const REFUSAL_CODES = { busy: 'VolumeBusy', invalid_state: 'VolumeInvalidState', attached: 'VolumeAttached', not_attached: 'VolumeInvalidState' } as const;

const cells = VOLUME_ACTIONS.flatMap((action) =>
  VOLUME_STATUSES.flatMap((status) => ([false, true] as const).map((attached) => ({ action, status, attached, cell: LIFECYCLE[action][status][attached ? 'attached' : 'detached'] }))),
);

const fileOf = (id: string) => join(h.config.dataDir, 'volumes', 'file', `${id}.raw`);
const driver = () => h.service.driver as FakeDriver;

async function settled(id: string): Promise<VolumeRecord | undefined> {
  for (let i = 0; i < 500; i++) {
    const v = await db.getVolume(id);
    if (!v || !['extending', 'attaching', 'detaching', 'deleting'].includes(v.status)) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`volume ${id} did not settle`);
}

describe('the lifecycle table holds its invariants', () => {
  it('never lets a volume with an attachment be deleted, whatever its status', () => {
    for (const status of VOLUME_STATUSES) expect(LIFECYCLE.delete[status].attached).toEqual({ refuse: 'attached' });
  });
  it('lets an attached volume be extended only from in-use or error_extending', () => {
    const allowed = VOLUME_STATUSES.filter((s) => 'to' in LIFECYCLE.extend[s].attached);
    expect(allowed.sort()).toEqual(['error_extending', 'in-use']);
  });
  it('refuses every action while a status that ends by itself is under way', () => {
    for (const action of VOLUME_ACTIONS) {
      for (const status of ['creating', 'attaching', 'detaching', 'extending', 'deleting'] as const) {
        expect('to' in LIFECYCLE[action][status].detached, `${action} while ${status}`).toBe(false);
      }
    }
  });
});

describe(`every cell of the lifecycle table (${VOLUME_ACTIONS.length} actions × ${VOLUME_STATUSES.length} statuses × attached or not), through the APIs`, () => {
  it.each(cells)('$action on a volume $status (attached: $attached) → $cell', async ({ action, status, attached, cell }) => {
    const { v, server } = await volumeIn(status, attached);
    const disksBefore = server ? driver().snapshot(server).disks : undefined;
    const sizeBefore = statSync(fileOf(v.id)).size;
    const outcome = await ask(action, v, server).then(
      () => undefined,
      (e: unknown) => e as ApiError,
    );
    if ('refuse' in cell) {
      expect(outcome, 'refused').toBeInstanceOf(ApiError);
      // An attached volume offered to another server: Nova's InvalidVolume (400), not the table's 409.
      const nova = action === 'attach' && cell.refuse === 'attached';
      expect(outcome!.status).toBe(nova ? 400 : 409);
      expect(outcome!.code).toBe(nova ? 'InvalidVolume' : REFUSAL_CODES[cell.refuse]);
      if (nova) expect(outcome!.message).toBe(`Invalid volume: volume ${v.id} is already attached to instances: ${server}`);
      expect(outcome!.final).toBe(cell.refuse !== 'busy');
      // Nothing changed: the record to its version, the file, the hypervisor's disks.
      expect(await db.getVolume(v.id)).toEqual(v);
      expect(statSync(fileOf(v.id)).size).toBe(sizeBefore);
      if (server) expect(driver().snapshot(server).disks).toEqual(disksBefore);
      return;
    }
    expect(outcome, `allowed, but: ${outcome?.message}`).toBeUndefined();
    const after = await settled(v.id);
    switch (action) {
      case 'attach':
        expect(after).toMatchObject({ status: 'in-use', serverId: OTHER_SERVER });
        break;
      case 'detach':
        expect(after).toMatchObject({ status: 'available', serverId: null });
        break;
      case 'extend':
        expect(after).toMatchObject({ status: attached ? 'in-use' : 'available', sizeBytes: v.sizeBytes + 64 * MiB, extend: null });
        expect(statSync(fileOf(v.id)).size).toBe(v.sizeBytes + 64 * MiB);
        break;
      case 'delete':
        expect(after).toBeUndefined();
        expect(() => statSync(fileOf(v.id))).toThrow(/ENOENT/);
        break;
    }
  });
});
