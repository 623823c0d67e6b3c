/**
 * What the guest itself saw while a peer suite (tempest) extended one of its volumes.
 *
 * Tempest never looks inside the guest, and at cleanup it detaches the volume and deletes the
 * server, so the guest must be read during the run. The watcher polls the service's native
 * volume API (an admin token of the test project) until a volume is attached (in-use, with an
 * attachment naming a server), then reads that server's domain XML from libvirt while it exists:
 * the console log (serial port 0, where the lab guest's init prints `OE-SIZES vda=… vdb=…` on
 * every size change) and the shell socket (serial port 1). Through the shell it finds the guest's
 * own device for the volume by its `<serial>` (the volume id), records the size the guest reports
 * for it, then waits for the volume to reach the target size in the volume API and for the guest
 * to report that size itself. The console log is the guest's own account, and it stays readable
 * after the server is gone only if the driver keeps it, so it is read while the run goes on.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { GuestShell, virsh } from '../../src/lab/index.js';
import type { FixtureApi } from './clients.js';

export interface GuestObservation {
  volumeId: string;
  serverId: string;
  /** The guest's name for the disk (from its serial), e.g. `vdb`. */
  device: string;
  /** What the guest reported for it once attached, and after the extend (bytes). */
  beforeBytes: number;
  afterBytes: number;
}

export interface GuestWatch {
  /** Resolves with what the guest saw, or rejects with what was missing. */
  result: Promise<GuestObservation>;
  stop(): void;
}

type Vol = { id: string; status: string; size: number; attachments?: Array<{ server_id: string }> };

/** Starts watching `api`'s project for the first attached volume and the guest's view of it growing to `targetGiB`. */
export function watchGuestSize(api: FixtureApi, libvirtUri: string, targetGiB: number, timeoutMs: number): GuestWatch {
  let stopped = false;
  const deadline = Date.now() + timeoutMs;
  const alive = () => {
    if (stopped) throw new Error('watch stopped before the guest reported the new size');
    if (Date.now() > deadline) throw new Error(`the guest did not report the volume at ${targetGiB} GiB within ${timeoutMs} ms`);
  };
  const result = (async (): Promise<GuestObservation> => {
    let vol: Vol | undefined;
    for (;;) {
      alive();
      const r = await api.volume('GET', '/volumes/detail');
      const vols = (r.body?.volumes as Vol[] | undefined) ?? [];
      vol = vols.find((v) => v.status === 'in-use' && (v.attachments?.length ?? 0) > 0);
      if (vol) break;
      await sleep(100);
    }
    const serverId = vol.attachments![0]!.server_id;
    const xml = await virsh({ libvirtUri }, ['dumpxml', serverId]);
    const consoleLog = /<serial type='file'>\s*<source path='([^']+)'/.exec(xml)?.[1];
    const shellSocket = /<serial type='unix'>\s*<source mode='bind' path='([^']+)'/.exec(xml)?.[1];
    if (!consoleLog || !shellSocket) throw new Error(`server ${serverId}'s domain has no file console and unix shell serial port: ${xml.slice(0, 400)}`);
    const guest = new GuestShell({ libvirtUri, uuid: serverId, name: serverId, consoleLog, shellSocket, persistent: true });
    await guest.waitReady(Math.max(1_000, deadline - Date.now()));
    const device = await guest.deviceForSerial(vol.id, 30_000);
    if (!device) throw new Error(`the guest shows no disk with serial ${vol.id}`);
    const beforeBytes = (await guest.sizes())[device];
    if (beforeBytes === undefined) throw new Error(`the guest reports no size for ${device}`);
    for (;;) {
      alive();
      const v = await api.getVolume(vol.id);
      if (v?.size === targetGiB) break;
      await sleep(100);
    }
    const afterBytes = await guest.waitForSize(device, targetGiB * 2 ** 30, Math.max(1_000, deadline - Date.now()));
    return { volumeId: vol.id, serverId, device, beforeBytes, afterBytes };
  })();
  result.catch(() => undefined);
  return { result, stop: () => (stopped = true) };
}
