import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeDriver } from '../../src/virt/fake/driver.js';
import { describeDriverContract } from './driver.contract.js';

const GiB = 1024 ** 3;
const SERVER = '11111111-1111-4111-8111-111111111111';
const STOPPED = '22222222-2222-4222-8222-222222222222';

describeDriverContract('FakeDriver', async () => {
  // The file disk sits on a real (sparse) file, as it would on a file volume backend, so the
  // fake grows it and measures what its filesystem holds.
  const dir = await mkdtemp(join(tmpdir(), 'oe-fake-contract-'));
  const file = join(dir, 'vol-file.raw');
  await writeFile(file, '');
  await truncate(file, GiB);
  const driver = new FakeDriver({
    servers: [
      {
        id: SERVER,
        name: 'vm',
        state: 'active',
        disks: [
          { volumeId: 'aaaaaaaa-0000-4000-8000-000000000001', device: 'vdb', kind: 'block', backingBytes: GiB, hostBytes: GiB, guestBytes: GiB },
          { volumeId: 'aaaaaaaa-0000-4000-8000-000000000002', device: 'vdc', kind: 'file', format: 'raw', source: file, backingBytes: GiB, hostBytes: GiB, guestBytes: GiB },
          { volumeId: 'aaaaaaaa-0000-4000-8000-000000000003', device: 'vdd', kind: 'block', readonly: true, backingBytes: GiB, hostBytes: GiB, guestBytes: GiB },
        ],
      },
      {
        id: STOPPED,
        name: 'off',
        state: 'shutoff',
        disks: [{ volumeId: 'aaaaaaaa-0000-4000-8000-000000000004', device: 'vdb', kind: 'block', backingBytes: GiB, hostBytes: GiB, guestBytes: GiB }],
      },
    ],
  });
  return {
    driver,
    serverId: SERVER,
    blockVolumeId: 'aaaaaaaa-0000-4000-8000-000000000001',
    fileVolumeId: 'aaaaaaaa-0000-4000-8000-000000000002',
    readonlyVolumeId: 'aaaaaaaa-0000-4000-8000-000000000003',
    stopped: { serverId: STOPPED, volumeId: 'aaaaaaaa-0000-4000-8000-000000000004' },
    growStorage: async (volumeId, bytes) => driver.setBackingBytes(volumeId, bytes),
    teardown: async () => {
      await driver.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});
