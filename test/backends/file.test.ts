import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileBackend } from '../../src/volume/backends/file.js';
import { describeBackendContract, newVolumeId } from './backend.contract.js';

for (const format of ['raw', 'qcow2'] as const) {
  describeBackendContract(`file (${format})`, async () => {
    const dir = await mkdtemp(join(tmpdir(), `oe-file-${format}-`));
    return {
      backend: new FileBackend({ dir, defaultFormat: format }),
      reopen: () => new FileBackend({ dir, defaultFormat: format }),
      teardown: () => rm(dir, { recursive: true, force: true }),
    };
  });
}

describe('FileBackend specifics', () => {
  it('makes a sparse raw file and a qcow2 whose header holds the virtual size', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'oe-file-'));
    try {
      const b = new FileBackend({ dir });
      const raw = newVolumeId();
      const q = newVolumeId();
      expect((await b.create(raw, 64 * 1024 * 1024)).connection.format).toBe('raw');
      const v = await b.create(q, 64 * 1024 * 1024, { format: 'qcow2' });
      expect(v.connection).toEqual({ volumeId: q, kind: 'file', format: 'qcow2', source: join(dir, `${q}.qcow2`) });
      const header = await readFile(join(dir, `${q}.qcow2`));
      expect(header.readBigUInt64BE(24)).toBe(64n * 1024n * 1024n);
      // A raw and a qcow2 of the same id never coexist: creating the other format is a conflict.
      await expect(b.create(q, 64 * 1024 * 1024, { format: 'raw' })).rejects.toMatchObject({ code: 'VolumeInvalidState' });
      await b.delete(raw);
      await b.delete(q);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
