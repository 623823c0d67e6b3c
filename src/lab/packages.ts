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
  // `ip netns` for the multi-host harness (hosts in network namespaces: test/support/netns.ts).
  'iproute2',
] as const;

/**
 * Debian's OpenStack clients and tempest, for the peer-suite tests (test/clients): the three CLIs
 * (`openstack` 6.0, `cinder` 9.1, `nova` 18.1), tempest 33, python3-rfc3987 (without it tempest's
 * jsonschema skips `uri` formats: it is only a Recommends of python3-jsonschema) and
 * python3-keystone (a real Keystone for the `--auth keystone` tests; it starts no service).
 */
export const CLIENT_PACKAGES = [
  'python3-openstackclient',
  'python3-cinderclient',
  'python3-novaclient',
  'tempest',
  'python3-rfc3987',
  'python3-keystone',
] as const;

/**
 * The engines of a scaled-out deployment (G), for the multi-host tests and `npm run bench --
 * scale`: PostgreSQL 15 and RabbitMQ 3.10. Installing them starts no service here (no systemd):
 * the tests start their own, in temporary directories, and stop them by pid.
 */
export const SCALE_PACKAGES = ['postgresql', 'rabbitmq-server'] as const;

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

/**
 * Install the missing packages of `pkgs` (default LAB_PACKAGES) with --no-install-recommends.
 * Returns the ones it installed (none when all were there: no apt-get runs). Throws if some are
 * missing and this is not root, or apt fails.
 */
export async function installPackages(log: (m: string) => void, pkgs: readonly string[] = LAB_PACKAGES): Promise<string[]> {
  const missing = await missingPackages(pkgs);
  if (missing.length === 0) return [];
  if (process.getuid?.() !== 0) throw new Error(`missing packages (need root to install): ${missing.join(' ')}`);
  await aptUpdate(log);
  log(`apt-get install ${missing.join(' ')}`);
  await mustRun(
    'apt-get',
    ['install', '-y', '--no-install-recommends', '-o', 'DPkg::Lock::Timeout=300', ...missing],
    { timeoutMs: 1_200_000, env: aptEnv() },
  );
  return missing;
}

/** Install the missing CLIENT_PACKAGES (see installPackages); returns the ones it installed. */
export async function installClientPackages(log: (m: string) => void): Promise<string[]> {
  return installPackages(log, CLIENT_PACKAGES);
}

/** Install the missing SCALE_PACKAGES (see installPackages); returns the ones it installed. */
export async function installScalePackages(log: (m: string) => void): Promise<string[]> {
  return installPackages(log, SCALE_PACKAGES);
}
