/** The Debian packages the lab needs, and installing the missing ones (apt-get, as root). */
import { mustRun, run } from './proc.js';

/**
 * Debian packages the lab needs (all installed with --no-install-recommends): QEMU, libvirt
 * (monolithic libvirtd, virsh), userspace iSCSI (tgt, QEMU's iscsi driver, libiscsi's tools), the
 * Python binding Nova's call path uses, and what the guest image build needs.
 */
export const LAB_PACKAGES = [
  'qemu-system-x86',
  'qemu-utils',
  'libvirt-daemon',
  'libvirt-daemon-driver-qemu',
  'libvirt-clients',
  'tgt',
  'qemu-block-extra',
  'libiscsi-bin',
  'python3-libvirt',
  'busybox-static',
  'xz-utils',
  'cpio',
] as const;

const aptEnv = (): NodeJS.ProcessEnv => ({ ...process.env, DEBIAN_FRONTEND: 'noninteractive' });
let aptUpdated = false;

/** `apt-get update`, once per process. Throws if it fails. */
export async function aptUpdate(log: (m: string) => void): Promise<void> {
  if (aptUpdated) return;
  log('apt-get update');
  await mustRun('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'update'], { timeoutMs: 600_000, env: aptEnv() });
  aptUpdated = true;
}

/** The packages of `pkgs` (default LAB_PACKAGES) that dpkg does not report as installed. */
export async function missingPackages(pkgs: readonly string[] = LAB_PACKAGES): Promise<string[]> {
  const r = await run('dpkg-query', ['-W', '-f=${Package} ${db:Status-Status}\n', ...pkgs]);
  const installed = new Set(
    r.stdout
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter((p) => p[1] === 'installed')
      .map((p) => p[0]),
  );
  return pkgs.filter((p) => !installed.has(p));
}

/** Install the missing LAB_PACKAGES. Throws if some are missing and this is not root, or apt fails. */
export async function installPackages(log: (m: string) => void): Promise<void> {
  const missing = await missingPackages();
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) throw new Error(`missing packages (need root to install): ${missing.join(' ')}`);
  await aptUpdate(log);
  log(`apt-get install ${missing.join(' ')}`);
  await mustRun(
    'apt-get',
    ['install', '-y', '--no-install-recommends', '-o', 'DPkg::Lock::Timeout=300', ...missing],
    { timeoutMs: 1_200_000, env: aptEnv() },
  );
}
