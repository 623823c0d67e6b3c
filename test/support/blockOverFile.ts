/** A volume backend for workflow tests: the file backend's storage, handed to compute as a block device. */
import type { AttachSpec } from '../../src/virt/driver.js';
import type { BackendVolume, StorageInspection, VolumeBackend } from '../../src/volume/backends/backend.js';
import { FileBackend } from '../../src/volume/backends/file.js';

/**
 * The file backend's storage handed to compute as a block device: the storage step really grows
 * it, and the fake host sees the growth only after a rescan. `hold` stalls the next extend call
 * until released (a slow storage step), and `extends` counts the calls.
 */
export class BlockOverFile implements VolumeBackend {
  readonly name = 'block';
  readonly attachedGrowth = 'storage' as const;
  extends = 0;
  private readonly files: FileBackend;
  private gate: { entered: () => void; open: Promise<void> } | undefined;

  /** `onExtend`: told of every extend call (a worker process reports them to its test). */
  constructor(
    dir: string,
    private readonly onExtend: (volumeId: string) => void = () => undefined,
  ) {
    this.files = new FileBackend({ dir });
  }

  /** The next extend call waits for `release`; `entered` resolves once it is waiting. */
  hold(): { entered: Promise<void>; release: () => void } {
    let release!: () => void;
    let entered!: () => void;
    const enteredP = new Promise<void>((r) => (entered = r));
    this.gate = { entered, open: new Promise<void>((r) => (release = r)) };
    return { entered: enteredP, release };
  }

  maxBytes(): Promise<number> {
    return this.files.maxBytes({ format: 'raw' });
  }
  async create(volumeId: string, bytes: number): Promise<BackendVolume> {
    await this.files.create(volumeId, bytes, { format: 'raw' });
    return { volumeId, bytes, connection: await this.connection(volumeId) };
  }
  async extend(volumeId: string, bytes: number): Promise<number> {
    this.extends++;
    this.onExtend(volumeId);
    const gate = this.gate;
    this.gate = undefined;
    if (gate) {
      gate.entered();
      await gate.open;
    }
    return this.files.extend(volumeId, bytes);
  }
  getBytes(volumeId: string): Promise<number> {
    return this.files.getBytes(volumeId);
  }
  async connection(volumeId: string): Promise<AttachSpec> {
    return { volumeId, kind: 'block', source: (await this.files.connection(volumeId)).source };
  }
  delete(volumeId: string): Promise<void> {
    return this.files.delete(volumeId);
  }
  exists(volumeId: string): Promise<boolean> {
    return this.files.exists(volumeId);
  }
  inspectStorage(volumeId: string): Promise<StorageInspection> {
    return this.files.inspectStorage(volumeId, { format: 'raw' });
  }
}

