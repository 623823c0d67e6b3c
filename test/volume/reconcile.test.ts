/**
 * Nothing stuck: a volume left creating, attaching, detaching or deleting by an operation that
 * did not finish (what a kill -9 or a failed last write leaves behind) is brought to an end when
 * the service starts, and the record then agrees with the storage and the hypervisor. Each row
 * puts the database and the world in one such state while the service is stopped, starts it,
 * and checks the outcome.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { SqliteStore } from '../../src/db/sqlite.js';
import type { VolumeStatus } from '../../src/db/store.js';
import type { FakeDriver } from '../../src/virt/fake/driver.js';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
let h: ServiceHarness | undefined;
afterEach(async () => h?.cleanup());

interface Row {
  name: string;
  status: VolumeStatus;
  /** Attach the volume through the API first (so the hypervisor has the disk). */
  plugged: boolean;
  /** Record the server on the volume (as a reservation for attach does). */
  server: boolean;
  /** Remove the volume's file before the restart. */
  fileGone?: boolean;
  expect: { status: VolumeStatus | 'deleted'; attached?: boolean; file: boolean };
}

const rows: Row[] = [
  { name: 'creating, file made', status: 'creating', plugged: false, server: false, expect: { status: 'available', file: true } },
  { name: 'creating, file not made yet', status: 'creating', plugged: false, server: false, fileGone: true, expect: { status: 'available', file: true } },
  { name: 'deleting, file still there', status: 'deleting', plugged: false, server: false, expect: { status: 'deleted', file: false } },
  { name: 'deleting, file already gone', status: 'deleting', plugged: false, server: false, fileGone: true, expect: { status: 'deleted', file: false } },
  { name: 'attaching, the disk was plugged in', status: 'attaching', plugged: true, server: true, expect: { status: 'in-use', attached: true, file: true } },
  { name: 'attaching, the disk was not plugged in', status: 'attaching', plugged: false, server: true, expect: { status: 'available', attached: false, file: true } },
  { name: 'attaching, no server recorded', status: 'attaching', plugged: false, server: false, expect: { status: 'available', attached: false, file: true } },
  { name: 'detaching, the disk is still plugged in', status: 'detaching', plugged: true, server: true, expect: { status: 'in-use', attached: true, file: true } },
  { name: 'detaching, the disk was unplugged', status: 'detaching', plugged: false, server: true, expect: { status: 'available', attached: false, file: true } },
];

describe('volumes left in a transitional status are reconciled at start', () => {
  it.each(rows)('$name → $expect.status', async (row) => {
    h = await makeService();
    const svc = h;
    const v = (await svc.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: row.name, size_bytes: 64 * MiB } })).body.volume;
    if (row.plugged) await svc.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: v.id } });
    await svc.stop();

    const file = join(svc.config.dataDir, 'volumes', 'file', `${v.id}.raw`);
    const db = new SqliteStore(join(svc.config.dataDir, 'online-extend.sqlite'));
    const server = row.server ? { serverId: SERVER, serverProjectId: PROJECT } : { serverId: null, serverProjectId: null };
    const device = row.status === 'detaching' ? { device: 'vdb' } : { device: null };
    expect(await db.updateVolume(v.id, {}, { status: row.status, ...server, ...device })).toBe(true);
    await db.close();
    if (row.fileGone) {
      const { rmSync } = await import('node:fs');
      rmSync(file);
    }

    await svc.start();
    const after = await (async () => {
      const check = new SqliteStore(join(svc.config.dataDir, 'online-extend.sqlite'));
      try {
        return await check.getVolume(v.id);
      } finally {
        await check.close();
      }
    })();
    if (row.expect.status === 'deleted') {
      expect(after).toBeUndefined();
    } else {
      expect(after?.status).toBe(row.expect.status);
    }
    expect(existsSync(file)).toBe(row.expect.file);
    if (row.expect.file) expect(statSync(file).size).toBe(64 * MiB);
    if (row.expect.attached !== undefined) {
      const disks = (svc.service.driver as FakeDriver).snapshot(SERVER).disks.map((d) => d.volumeId);
      expect(disks.includes(v.id)).toBe(row.expect.attached);
      expect(after?.serverId ?? null).toBe(row.expect.attached ? SERVER : null);
      expect(after?.device ?? null).toBe(row.expect.attached ? 'vdb' : null);
    }
  });
});
