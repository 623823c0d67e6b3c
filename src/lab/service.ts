/** The service's configuration for a lab (used by the demo and by the tests that run the whole product). */
import type { LabInfo } from './lab.js';

/**
 * The service's settings for `lab`, as flags for config.ts's loadConfig (the caller loads them):
 * the libvirt driver on the lab's libvirtd, the backends on its tgtd, ephemeral ports (0) on
 * 127.0.0.1, no inventory sync timer.
 */
export function labServiceFlags(lab: LabInfo, o: { dataDir: string; backends: string[]; projectId: string; logLevel: string }) {
  return {
    dataDir: o.dataDir,
    driver: 'libvirt',
    libvirtUri: lab.libvirtUri,
    port: 0,
    volumePort: 0,
    imagePort: 0,
    backends: o.backends.join(','),
    iscsiPortal: lab.tgtPortal,
    tgtControlPort: lab.tgtControlPort,
    defaultProject: o.projectId,
    syncIntervalMs: 0,
    logLevel: o.logLevel,
  };
}
