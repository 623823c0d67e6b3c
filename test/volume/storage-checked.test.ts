/**
 * storageChecked (src/volume/backends/storageChecked.ts): what "storage present" means, decided
 * once for every backend, and applied to every action on an existing volume's storage.
 * Real backends over real files in a temp dir, records in a real SQLite store. The block and iSCSI
 * backends' actions would run losetup and tgtadm: refused storage never reaches them, and the
 * healthy cases here use only what needs neither (inspectStorage; block's getBytes).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../src/db/sqlite.js';
import type { VolumeRecord } from '../../src/db/store.js';
import { isServiceError, type ServiceError } from '../../src/errors.js';
import type { VolumeBackend } from '../../src/volume/backends/backend.js';
import { BlockBackend } from '../../src/volume/backends/block.js';
import { FileBackend } from '../../src/volume/backends/file.js';
import { IscsiBackend } from '../../src/volume/backends/iscsi.js';
import { storageChecked } from '../../src/volume/backends/storageChecked.js';

const MiB = 2 ** 20;
/** The payload offset of a LUKS header with QEMU 7.2's defaults (luks.ts); only the record's number matters here. */
const LUKS_HEADER = 2_068_480;
const ID = 'vol-checked-1';

let dir: string;
let store: SqliteStore;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'oe-checked-'));
  store = new SqliteStore(join(dir, 'db.sqlite'));
});
afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

type Kind = 'file' | 'file-qcow2' | 'block' | 'iscsi';
const KINDS: Kind[] = ['file', 'file-qcow2', 'block', 'iscsi'];

/** The backend of `kind` over `<dir>/volumes/<name>`, and where volume ID's storage is. */
function backendOf(kind: Kind): { backend: VolumeBackend; path: string; format: 'raw' | 'qcow2' | null } {
  const pool = join(dir, 'volumes', kind);
  mkdirSync(pool, { recursive: true });
  if (kind === 'file') return { backend: new FileBackend({ dir: pool }), path: join(pool, `${ID}.raw`), format: 'raw' };
  if (kind === 'file-qcow2') return { backend: new FileBackend({ dir: pool, defaultFormat: 'qcow2' }), path: join(pool, `${ID}.qcow2`), format: 'qcow2' };
  if (kind === 'block') return { backend: new BlockBackend({ dir: pool }), path: join(pool, `${ID}.raw`), format: null };
  return { backend: new IscsiBackend({ dir: pool, portal: '127.0.0.1:1', timeoutMs: 1_000 }), path: join(pool, `${ID}.raw`), format: null };
}

async function record(backend: string, format: 'raw' | 'qcow2' | null, encrypted: boolean): Promise<void> {
  const v: Omit<VolumeRecord, 'createdAt' | 'updatedAt' | 'version'> = {
    id: ID,
    projectId: 'p-checked',
    name: 'checked',
    sizeBytes: 64 * MiB,
    status: 'available',
    backend,
    format,
    serverId: null,
    serverProjectId: null,
    device: null,
    extend: null,
    userId: 'tester',
    description: null,
    metadata: {},
    attachedAt: null,
    encryption: encrypted ? 'luks' : null,
    payloadOffset: encrypted ? LUKS_HEADER : null,
  };
  await store.createVolume(v);
}

/** What stands at the storage's path instead of the volume, and the words the detail uses for it. */
const DAMAGES = [
  { damage: 'removed', make: (p: string) => rmSync(p), problem: 'no such file', left: (p: string) => expect(() => statSync(p)).toThrow(/ENOENT/) },
  { damage: 'replaced by a directory', make: (p: string) => (rmSync(p), mkdirSync(p)), problem: 'a directory stands there', left: (p: string) => expect(statSync(p).isDirectory()).toBe(true) },
  { damage: 'replaced by an empty file', make: (p: string) => (rmSync(p), writeFileSync(p, '')), problem: 'the file is empty (0 bytes)', left: (p: string) => expect(statSync(p).size).toBe(0) },
];

/** Every action on an existing volume's storage, through the checked backend. */
const ACTIONS: Array<{ action: string; call: (b: VolumeBackend) => Promise<unknown> }> = [
  { action: 'extend', call: (b) => b.extend(ID, 128 * MiB) },
  { action: 'getBytes', call: (b) => b.getBytes(ID) },
  { action: 'connection', call: (b) => b.connection(ID) },
  { action: 'inspectStorage', call: (b) => b.inspectStorage(ID) },
];

const refusal = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected VolumeStorageMissing');
    },
    (e: unknown) => {
      if (!isServiceError(e)) throw e;
      return e;
    },
  );

function expectMissing(err: ServiceError, kind: Kind, path: string, problem: string): void {
  const name = kind === 'file-qcow2' ? 'file' : kind;
  expect(err).toMatchObject({ code: 'VolumeStorageMissing', status: 500, final: true });
  expect(err.message).toBe(`The storage of volume ${ID} is missing from its ${name} backend; nothing was changed. An operator must restore it, or delete the volume.`);
  expect(err.message).not.toContain('/');
  // The operator's detail (logged, never sent) names where the storage belongs and what is there.
  expect(err.detail).toContain(path);
  expect(err.detail).toContain(problem);
}

describe.each(KINDS)('a %s volume', (kind) => {
  describe.each(DAMAGES)('whose storage was $damage', ({ make, problem, left }) => {
    it.each(ACTIONS)('answers $action with VolumeStorageMissing naming the path in its detail, and leaves what is there alone', async ({ call }) => {
      const { backend, path, format } = backendOf(kind);
      await record(kind === 'file-qcow2' ? 'file' : kind, format, false);
      writeFileSync(path, Buffer.alloc(4096));
      make(path);
      const checked = storageChecked(new Map([[kind === 'file-qcow2' ? 'file' : kind, backend]]), store).values().next().value!;
      expectMissing(await refusal(call(checked)), kind, path, problem);
      left(path);
    });
  });

  it('answers inspectStorage for storage that is there with what is there', async () => {
    const { backend, path, format } = backendOf(kind);
    await record(kind, format, false);
    writeFileSync(path, Buffer.alloc(8192));
    const checked = storageChecked(new Map([[kind, backend]]), store).get(kind)!;
    expect(await checked.inspectStorage(ID)).toEqual({ path, type: 'file', bytes: 8192 });
  });
});

describe('an encrypted (LUKS) volume', () => {
  it.each([
    { what: 'shorter than its LUKS header', bytes: MiB, ok: false },
    { what: 'exactly its LUKS header (nothing left for the guest)', bytes: LUKS_HEADER, ok: false },
    { what: 'one sector longer than its LUKS header', bytes: LUKS_HEADER + 512, ok: true },
  ])('whose file is $what counts as present: $ok', async ({ bytes, ok }) => {
    const { backend, path } = backendOf('file');
    await record('file', 'raw', true);
    writeFileSync(path, '');
    truncateSync(path, bytes);
    const checked = storageChecked(new Map([['file', backend]]), store).get('file')!;
    if (ok) {
      expect(await checked.getBytes(ID)).toBe(bytes);
    } else {
      expectMissing(await refusal(checked.getBytes(ID)), 'file', path, `no more than the volume's LUKS header (${LUKS_HEADER} bytes)`);
      expect(statSync(path).size).toBe(bytes);
    }
  });

  it('is not judged by its size when unencrypted: a file of one sector is a volume', async () => {
    const { backend, path } = backendOf('file');
    await record('file', 'raw', false);
    writeFileSync(path, Buffer.alloc(512));
    const checked = storageChecked(new Map([['file', backend]]), store).get('file')!;
    expect(await checked.getBytes(ID)).toBe(512);
  });
});

describe('healthy storage', () => {
  it('extends a detached file volume through the checked backend as before', async () => {
    const { backend, path } = backendOf('file');
    await record('file', 'raw', false);
    await backend.create(ID, 64 * MiB, { format: 'raw' });
    const checked = storageChecked(new Map([['file', backend]]), store).get('file')!;
    expect(await checked.extend(ID, 128 * MiB)).toBe(128 * MiB);
    expect(statSync(path).size).toBe(128 * MiB);
    expect(await checked.connection(ID)).toEqual({ volumeId: ID, kind: 'file', format: 'raw', source: path });
  });

  it('measures a block volume on its backing file through the checked backend', async () => {
    const { backend, path } = backendOf('block');
    await record('block', null, false);
    writeFileSync(path, '');
    truncateSync(path, 64 * MiB);
    const checked = storageChecked(new Map([['block', backend]]), store).get('block')!;
    expect(await checked.getBytes(ID)).toBe(64 * MiB);
  });

  it('finds a file volume of the recorded format only: a raw volume whose .raw is gone is missing even with a .qcow2 beside it', async () => {
    const { backend, path } = backendOf('file');
    await record('file', 'raw', false);
    writeFileSync(join(dir, 'volumes', 'file', `${ID}.qcow2`), Buffer.alloc(4096));
    const checked = storageChecked(new Map([['file', backend]]), store).get('file')!;
    expectMissing(await refusal(checked.getBytes(ID)), 'file', path, 'no such file');
  });
});
