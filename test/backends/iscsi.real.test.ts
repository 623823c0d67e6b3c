import { mkdtemp, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { IscsiBackend, iqnOf } from '../../src/volume/backends/iscsi.js';
import { describeReal } from '../support/real.js';
import { describeBackendContract, expectServiceError, newVolumeId, qemuIo } from './backend.contract.js';
import { PORTAL, tgtdUnavailable, useTgtd, type TgtdHandle } from './tgtd.js';

const MiB = 1024 * 1024;
const describeIscsi = describeReal(tgtdUnavailable());

describeIscsi('iscsi backend (userspace tgtd)', () => {
  let tgtd: TgtdHandle;
  const dirs: string[] = [];
  let dir: string;
  let backend: IscsiBackend;

  beforeAll(async () => {
    tgtd = await useTgtd();
    dir = await mkdtemp(join(tmpdir(), 'oe-iscsi-'));
    dirs.push(dir);
    backend = new IscsiBackend({ dir, portal: PORTAL });
  });

  afterAll(async () => {
    try {
      await tgtd?.stop(dirs);
    } finally {
      for (const d of dirs) await rm(d, { recursive: true, force: true });
    }
  });

  describeBackendContract('iscsi', async () => {
    const d = await mkdtemp(join(tmpdir(), 'oe-iscsi-contract-'));
    dirs.push(d);
    return {
      backend: new IscsiBackend({ dir: d, portal: PORTAL }),
      reopen: () => new IscsiBackend({ dir: d, portal: PORTAL }),
      teardown: async () => {
        // targets are deleted with their volumes; anything left goes in the outer afterAll.
      },
    };
  });

  it('publishes the grown size only after the LUN refresh, and resumes an extend that crashed between', async () => {
    const id = newVolumeId();
    await backend.create(id, 4 * MiB);
    // Crash after growing the file, before the refresh: tgt still reports the cached size.
    await truncate(join(dir, `${id}.raw`), 12 * MiB);
    expect(await backend.getBytes(id)).toBe(4 * MiB);
    // Extending again to the same size resumes: refresh, then measure.
    expect(await backend.extend(id, 12 * MiB)).toBe(12 * MiB);
    expect(await backend.getBytes(id)).toBe(12 * MiB);
    await backend.delete(id);
  });

  it('re-exports a volume whose target vanished (tgtd restart) on connection()', async () => {
    const id = newVolumeId();
    const v = await backend.create(id, 4 * MiB);
    const w = await qemuIo(v.connection, 'write -P 0x33 0 4k');
    expect(w.ok, w.output).toBe(true);
    const t = await backend.findTarget(id);
    expect(t?.iqn).toBe(iqnOf(id));
    await backend.tgt.run(['--op', 'delete', '--mode', 'target', '--tid', String(t?.tid), '--force']);
    await expectServiceError(backend.getBytes(id), 'BackendFailed');
    expect(await backend.connection(id)).toEqual(v.connection);
    expect(await backend.getBytes(id)).toBe(4 * MiB);
    const r = await qemuIo(v.connection, 'read -P 0x33 0 4k');
    expect(r.ok, r.output).toBe(true);
    await backend.delete(id);
    expect(await backend.findTarget(id)).toBeUndefined();
  });

  it('gives every volume its own target and tid', async () => {
    const ids = [newVolumeId(), newVolumeId(), newVolumeId()];
    await Promise.all(ids.map((id) => backend.create(id, 2 * MiB)));
    const tids = await Promise.all(ids.map(async (id) => (await backend.findTarget(id))?.tid));
    expect(new Set(tids).size).toBe(3);
    for (const id of ids) await backend.delete(id);
  });

  it('gets exit 22 from tgtadm whatever the refusal, so it decides by reading the targets again', async () => {
    const id = newVolumeId();
    await backend.create(id, 4 * MiB);
    const t = await backend.findTarget(id);
    if (!t) return expect.fail('no target after create');
    // "already exists" and "can't find" look the same by exit status.
    expect((await backend.tgt.raw(['--op', 'new', '--mode', 'target', '--tid', String(t.tid), '-T', `${iqnOf(id)}-dup`])).code).toBe(22);
    expect((await backend.tgt.raw(['--op', 'delete', '--mode', 'logicalunit', '--tid', '99999', '--lun', '1'])).code).toBe(22);
    // A refresh whose LUN another caller already deleted: the delete fails, the re-read shows
    // the LUN gone, and the refresh goes on to add it back over our file.
    await backend.tgt.run(['--op', 'delete', '--mode', 'logicalunit', '--tid', String(t.tid), '--lun', '1']);
    await truncate(join(dir, `${id}.raw`), 8 * MiB);
    await backend.refreshLun(t.tid, join(dir, `${id}.raw`));
    expect((await backend.findTarget(id))?.luns.find((l) => l.lun === 1)?.backingPath).toBe(join(dir, `${id}.raw`));
    expect(await backend.getBytes(id)).toBe(8 * MiB);
    await backend.delete(id);
    expect(await backend.findTarget(id)).toBeUndefined();
  });

  it('refuses ids tgt cannot put in an IQN', async () => {
    await expectServiceError(backend.create('Vol_1', 2 * MiB), 'InvalidInput');
  });
});
