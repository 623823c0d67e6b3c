/**
 * The test lab: a private libvirtd, a userspace iSCSI target (tgtd) and a tiny test guest that
 * reports the size of every disk it sees. Used by the real tests, CI, the benchmark and the demo.
 *
 * This file is the lab's API (start/stop a lab, boot a guest, talk to it); the mechanisms live
 * by concern beside it: packages.ts (Debian packages), image.ts (guest kernel + initramfs),
 * libvirtd.ts, tgtd.ts, lab.ts (up/down, lab.json, the lock), domain.ts (domain XML, boot),
 * guestShell.ts (the guest seen from its serial ports), proc.ts (processes), service.ts (the
 * service's settings for a lab)).
 *
 * Nothing here touches the host's /etc or /var: libvirtd runs in a private mount namespace with
 * private directories bound over its own (scripts/lab/start-libvirtd.sh). Everything labUp starts
 * is recorded by pid in `<dir>/lab.json`; labDown stops exactly that.
 *
 * See /work/shared/notes/environment.md for the measured facts this relies on.
 */
export { defaultCacheDir, defaultLabDir, repoRoot } from './dirs.js';
export { labDown, labHealthy, labLoopDevices, labUp, readLab, type LabInfo, type LabUpOptions } from './lab.js';
export { PLACEHOLDER_VDA_BYTES, bootGuest, domainXml, virsh, type BootGuestOptions, type GuestHost, type DomainXmlOptions } from './domain.js';
export { GuestExecError, GuestShell, WaitForSizeTimeout, parseSizes, type GuestShellInit } from './guestShell.js';
export { LAB_GUEST_ID, labGuestCatalog, labServiceFlags } from './service.js';
export { CLIENT_PACKAGES, LAB_PACKAGES, SCALE_PACKAGES, installClientPackages, installScalePackages, missingPackages } from './packages.js';
export { pidAlive, run, waitFor, type RunResult } from './proc.js';
export { startLibvirtd, stopLibvirtd, type LabLibvirtd, type StartLibvirtdOptions } from './libvirtd.js';
export { buildGuestImage, GUEST_CMDLINE, type GuestImage } from './image.js';
export {
  ACCEL_ENV,
  ACCEL_MODES,
  KVM_BOOT_DEADLINE_MS,
  accelModeFromEnv,
  decideAccel,
  describeAccel,
  parseAccelMode,
  type Accel,
  type AccelCause,
  type AccelChoice,
  type AccelMode,
  type AccelProbeSteps,
  type KvmBootOutcome,
} from './accel.js';
export { labAccel } from './accelProbe.js';
