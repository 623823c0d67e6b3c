/**
 * Reconcilers in several processes on one database (issue G): two VolumeReconcilers, each with
 * its own connection to one real SQLite file and its own InFlight (two processes), must not
 * fight over a volume: one of them acts on it, once; and a reconciler leaves alone a volume whose
 * operation is still under way in another process that keeps it fresh (InFlight's heartbeat).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { SqliteStore } from '../../src/db/sqlite.js';
import type { VolumeRecord, VolumeStatus } from '../../src/db/store.js';
import type { ComputeForVolumes } from '../../src/rpc/computeClient.js';
import type { BackendVolume, StorageInspection, VolumeBackend } from '../../src/volume/backends/backend.js';
import { FileBackend } from '../../src/volume/backends/file.js';
import { InFlight, VolumeReconciler } from '../../src/volume/reconciler.js';

const MiB = 2 ** 20;
const SERVER = 'srv-recon';
const logger = pino({ level: 'silent' });

/** The file backend, counting creates and deletes. */
class CountingFiles implements VolumeBackend {
  readonly name = 'file';
  readonly attachedGrowth = 'hypervisor' as const;
  readonly counts = { create: 0, delete: 0 };
  private readonly files: FileBackend;
  constructor(dir: string) {
    this.files = new FileBackend({ dir });
  }
  maxBytes(): Promise<number> {
    return this.files.maxBytes({ format: 'raw' });
  }
  create(volumeId: string, bytes: number): Promise<BackendVolume> {
    this.counts.create++;
    return this.files.create(volumeId, bytes, { format: 'raw' });
  }
  extend(volumeId: string, bytes: number): Promise<number> {
    return this.files.extend(volumeId, bytes);
  }
  getBytes(volumeId: string): Promise<number> {
    return this.files.getBytes(volumeId);
  }
  connection(volumeId: string) {
    return this.files.connection(volumeId);
  }
  delete(volumeId: string): Promise<void> {
    this.counts.delete++;
    return this.files.delete(volumeId);
  }
  exists(volumeId: string): Promise<boolean> {
    return this.files.exists(volumeId);
  }
  inspectStorage(volumeId: string): Promise<StorageInspection> {
    return this.files.inspectStorage(volumeId, { format: 'raw' });
  }
}

/** What the hypervisor has plugged into the server (`plugged`), answered after a short delay, counting the questions. */
function hypervisor(plugged: boolean): Pick<ComputeForVolumes, 'connections'> & { asked: number } {
  const h = {
    asked: 0,
    async connections(_tenant: string, _serverId: string) {
      h.asked++;
      await new Promise((r) => setTimeout(r, 20));
      return { value: plugged ? [{ volumeId: VOLUME, device: 'vdb' }] : [] };
    },
  };
  return h as unknown as Pick<ComputeForVolumes, 'connections'> & { asked: number };
}

const VOLUME = 'vol-recon-1';
let cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

/** One database file, `n` connections to it (one per process), and the volume in `status`. */
async function setup(status: VolumeStatus, n: number): Promise<{ stores: SqliteStore[]; backend: CountingFiles }> {
  const dir = mkdtempSync(join(tmpdir(), 'oe-recon-workers-'));
  const file = join(dir, 'online-extend.sqlite');
  const stores = Array.from({ length: n }, () => new SqliteStore(file));
  const backend = new CountingFiles(join(dir, 'volumes'));
  cleanup.push(async () => {
    for (const s of stores) await s.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const attached = status === 'attaching' || status === 'detaching';
  const record: Omit<VolumeRecord, 'createdAt' | 'updatedAt' | 'version'> = {
    id: VOLUME,
    projectId: 'p-recon',
    name: 'stuck',
    sizeBytes: 64 * MiB,
    status,
    backend: 'file',
    format: 'raw',
    serverId: attached ? SERVER : null,
    serverProjectId: attached ? 'p-recon' : null,
    device: status === 'detaching' ? 'vdb' : null,
    extend: null,
    userId: 'tester',
    description: null,
    metadata: {},
    attachedAt: null,
  };
  await stores[0]!.createVolume(record);
  if (status === 'deleting') await backend.create(VOLUME, 64 * MiB);
  backend.counts.create = 0;
  return { stores, backend };
}

function reconciler(store: SqliteStore, backend: VolumeBackend, compute: Pick<ComputeForVolumes, 'connections'>, inFlight = new InFlight(), graceMs = 0): VolumeReconciler {
  const r = new VolumeReconciler({ store, backends: new Map([['file', backend]]), compute, inFlight, logger, options: { intervalMs: 50, graceMs } });
  cleanup.push(() => r.close());
  return r;
}

describe('two reconcilers on one database act on a stuck volume once, with one outcome', () => {
  const rows = [
    { status: 'creating', plugged: false, expect: 'available', calls: { create: 1, delete: 0, asked: 0 } },
    { status: 'deleting', plugged: false, expect: 'deleted', calls: { create: 0, delete: 1, asked: 0 } },
    { status: 'attaching', plugged: true, expect: 'in-use', calls: { create: 0, delete: 0, asked: 1 } },
    { status: 'detaching', plugged: false, expect: 'available', calls: { create: 0, delete: 0, asked: 1 } },
  ] as const;
  it.each(rows)('$status → $expect, the storage or compute asked once', async (row) => {
    const { stores, backend } = await setup(row.status, 2);
    const compute = hypervisor(row.plugged);
    const [r1, r2] = [reconciler(stores[0]!, backend, compute), reconciler(stores[1]!, backend, compute)];
    await Promise.all([r1.round(0), r2.round(0)]);
    expect({ ...backend.counts, asked: compute.asked }).toEqual(row.calls);
    const after = await stores[1]!.getVolume(VOLUME);
    expect(after?.status ?? 'deleted').toBe(row.expect);
  });
});

describe('a reconciler and an operation under way in another process', () => {
  const cases = [
    { how: 'keeps its record fresh (InFlight heartbeat)', heartbeat: true, expect: 'attaching', asked: 0 },
    { how: 'does not (serve: the only process)', heartbeat: false, expect: 'available', asked: 'some' },
  ] as const;
  it.each(cases)('when the process attaching it $how, the other reconciler ends in $expect', async ({ heartbeat, expect: status, asked }) => {
    const { stores, backend } = await setup('attaching', 2);
    const graceMs = 150;
    // Process 1: an attach under way for well over graceMs (compute has not plugged the disk yet).
    const inFlight1 = heartbeat ? new InFlight({ store: stores[0]!, everyMs: graceMs / 3 }) : new InFlight();
    let finish!: () => void;
    const attach = inFlight1.run(VOLUME, () => new Promise<void>((r) => (finish = r)));
    // Process 2: its reconciler looks every 50 ms at records untouched for graceMs.
    const compute2 = hypervisor(false);
    const r2 = reconciler(stores[1]!, backend, compute2, new InFlight(), graceMs);
    for (let i = 0; i < 10; i++) {
      await new Promise((r) => setTimeout(r, 50));
      await r2.round(graceMs);
    }
    finish();
    await attach;
    expect((await stores[1]!.getVolume(VOLUME))?.status).toBe(status);
    if (asked === 0) expect(compute2.asked).toBe(0);
    else expect(compute2.asked).toBeGreaterThan(0);
  });
});
