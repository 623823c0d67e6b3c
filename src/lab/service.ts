/** The service's configuration for a lab (used by the demo and by the tests that run the whole product), and the lab's guest as an image and a flavor. */
import type { LabInfo } from './lab.js';

/**
 * The service's settings for `lab`, as flags for config.ts's loadConfig (the caller loads them):
 * the libvirt driver on the lab's libvirtd, the backends on its tgtd, ephemeral ports (0) on
 * 127.0.0.1, no inventory sync timer, servers under the lab's accelerator.
 */
export function labServiceFlags(lab: LabInfo, o: { dataDir: string; backends: string[]; projectId: string; logLevel: string }) {
  return {
    dataDir: o.dataDir,
    driver: 'libvirt',
    libvirtUri: lab.libvirtUri,
    port: 0,
    volumePort: 0,
    identityPort: 0,
    imagePort: 0,
    backends: o.backends.join(','),
    iscsiPortal: lab.tgtPortal,
    tgtControlPort: lab.tgtControlPort,
    defaultProject: o.projectId,
    syncIntervalMs: 0,
    logLevel: o.logLevel,
    // Servers created through the API run under the accelerator the lab's probe chose.
    virtType: lab.accel.accel === 'kvm' ? 'kvm' : 'qemu',
  };
}

/** The id (and name) the lab's guest is registered under, as an image and as a flavor. */
export const LAB_GUEST_ID = 'lab-guest';

/**
 * The lab's guest as `online-extend image create` and `flavor create` take it (their options, in
 * the CLI's units): a kernel image (the guest's kernel, initramfs and command line) and a flavor
 * of 1 vCPU, 256 MiB and a 1 GiB root disk (`vda`, so the volumes a server takes are `vdb`… in
 * the guest as in libvirt). `online-extend lab register` registers both in a data dir.
 */
export function labGuestCatalog(lab: Pick<LabInfo, 'kernel' | 'initrd' | 'cmdline'>) {
  return {
    image: { id: LAB_GUEST_ID, name: LAB_GUEST_ID, kernel: lab.kernel, ramdisk: lab.initrd, cmdline: lab.cmdline, minRam: 128 },
    flavor: { id: LAB_GUEST_ID, name: LAB_GUEST_ID, vcpus: 1, ram: 256, disk: 1 },
  };
}
