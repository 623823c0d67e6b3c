/**
 * What the guest itself saw while a peer suite (tempest) extended one of its volumes.
 *
 * Tempest never looks inside the guest, and at cleanup it detaches the volume and deletes the
 * server, so the guest must be read during the run. The watcher polls the service's native
 * volume API (an admin token of the test project) until a volume is attached (in-use, with an
 * attachment naming a server), then reads that server's domain XML from libvirt while it exists:
 * the console log (serial port 0, where the lab guest's init prints `OE-SIZES vda=… vdb=…` on
 * every size change) and the shell socket (serial port 1). Through the shell it finds the guest's
 * own device for the volume by its `<serial>` (the volume id), waits for the volume to reach the
 * target size in the volume API and for the guest to report that size itself, and reads from the
 * console every size the guest reported for that device (the first is what it saw at attach if
 * it had booted by then). The console log is the guest's own account; it goes with
 * the server's instance directory, so it is read while the run goes on.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { GuestShell, parseSizes, virsh } from '../../src/lab/index.js';
import type { FixtureApi } from './clients.js';

export interface GuestObservation {
  volumeId: string;
  serverId: string;
  /** The guest's name for the disk (from its serial), e.g. `vdb`. */
  device: string;
  /** The first size the guest reported for it (at attach, if it had booted by then), and after the extend (bytes). */
  beforeBytes: number;
  afterBytes: number;
  /** Every size the guest reported for it, in order, repeats dropped. */
  history: number[];
}

/** The successive sizes `device` had in a console log's `OE-SIZES` lines (repeats dropped). */
export function sizeHistory(log: string, device: string): number[] {
  const out: number[] = [];
  for (const m of log.matchAll(/^OE-SIZES((?: [A-Za-z0-9]+=\d+)*) *$/gm)) {
    const bytes = parseSizes(m[1]!)[device];
    if (bytes !== undefined && out.at(-1) !== bytes) out.push(bytes);
  }
  return out;
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
    for (;;) {
      alive();
      const v = await api.getVolume(vol.id);
      if (v?.size === targetGiB) break;
      await sleep(100);
    }
    const afterBytes = await guest.waitForSize(device, targetGiB * 2 ** 30, Math.max(1_000, deadline - Date.now()));
    // The console holds a line for every change the guest saw since its init started: the first
    // size is the one at attach when the guest had booted by then (tempest attaches as soon as the
    // server is ACTIVE, which may be before the guest's init runs).
    const history = sizeHistory(await guest.readLog(), device);
    return { volumeId: vol.id, serverId, device, beforeBytes: history[0]!, afterBytes, history };
  })();
  result.catch(() => undefined);
  return { result, stop: () => (stopped = true) };
}
