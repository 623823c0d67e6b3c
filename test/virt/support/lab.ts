/**
 * The lab (src/lab) for the libvirt driver's real tests: one private lab per test file (its own
 * libvirtd and tgtd, in a temp dir), torn down with labDown.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labDown, labUp, type LabInfo } from '../../../src/lab/index.js';
import { spawnSync } from 'node:child_process';
import { tgtdMissing } from './tgtd.js';

export interface TestLab {
  lab: LabInfo;
  dir: string;
  down(): Promise<void>;
}

/** Why the lab cannot run here, or undefined. */
export function labMissing(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (the lab runs libvirtd in a private mount namespace)';
  for (const bin of ['libvirtd', 'virsh', 'unshare', 'qemu-system-x86_64', 'losetup']) {
    if (spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0) return `${bin} is not installed`;
  }
  return tgtdMissing();
}

export async function startLab(): Promise<TestLab> {
  const dir = mkdtempSync(join(tmpdir(), 'oe-vlab-'));
  try {
    const lab = await labUp({ dir });
    const down = async (): Promise<void> => {
      await labDown({ dir });
      rmSync(dir, { recursive: true, force: true });
    };
    return { lab, dir, down };
  } catch (err) {
    await labDown({ dir }).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
