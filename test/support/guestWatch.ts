/**
 * What the guest itself saw while a peer suite (tempest) extended one of its volumes online.
 *
 * Tempest never looks inside the guest. It extends the attached volume as soon as its server is
 * ACTIVE (on a TCG guest, seconds before the guest's init runs) and its cleanup deletes the
 * server at once (measured: the whole test took 6 s, the guest had not booted). So tempest runs
 * with two gates (test/support/tempest_gated_run.py, timing only): its extend call waits until
 * this watcher has seen the guest report the attached volume, and its detach waits until the
 * watcher has read the guest after the extend.
 *
 * The watcher: when tempest asks to extend (gate file `extend-requested` names the volume), it
 * finds the server the volume is attached to (the service's native volume API, an admin token of
 * the test project), reads that server's domain XML from libvirt (serial port 0: the console log,
 * where the lab guest's init prints `OE-SIZES vda=… vdb=…` on every size change; serial port 1:
 * its shell), waits for the guest to boot, finds the guest's own device for the volume by its
 * `<serial>` (the volume id) and its size, opens the `guest-ready` gate, waits for the volume to
 * reach the target size in the volume API and for the guest to report that size itself, reads
 * every size the guest reported for the device from its console, and opens `guest-read`. On any
 * failure it opens both gates, so tempest never waits for a watcher that gave up.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { GuestShell, parseSizes, virsh } from '../../src/lab/index.js';
import type { FixtureApi } from './clients.js';

export interface GuestObservation {
  volumeId: string;
  serverId: string;
  /** The guest's name for the disk (from its serial), e.g. `vdb`. */
  device: string;
  /** What the guest reported for it before the extend and after it (bytes). */
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
}

/** Watches (see the module comment) through the gates in `gateDir`, for the volume to grow to `targetGiB`. */
export function watchGuestSize(api: FixtureApi, libvirtUri: string, targetGiB: number, gateDir: string, timeoutMs: number): GuestWatch {
  const deadline = Date.now() + timeoutMs;
  const alive = (what: string) => {
    if (Date.now() > deadline) throw new Error(`watcher: ${what} not within ${timeoutMs} ms`);
  };
  const open = (gate: string) => writeFileSync(join(gateDir, gate), '');
  const result = (async (): Promise<GuestObservation> => {
    const requested = join(gateDir, 'extend-requested');
    while (!existsSync(requested)) {
      alive('tempest asked for no extend');
      await sleep(100);
    }
    const volumeId = readFileSync(requested, 'utf8').trim();
    const vol = await api.getVolume(volumeId);
    const serverId = vol?.attachments?.[0]?.server_id;
    if (!serverId) throw new Error(`volume ${volumeId} is attached to no server: ${JSON.stringify(vol)}`);
    const xml = await virsh({ libvirtUri }, ['dumpxml', serverId]);
    const consoleLog = /<serial type='file'>\s*<source path='([^']+)'/.exec(xml)?.[1];
    const shellSocket = /<serial type='unix'>\s*<source mode='bind' path='([^']+)'/.exec(xml)?.[1];
    if (!consoleLog || !shellSocket) throw new Error(`server ${serverId}'s domain has no file console and unix shell serial port: ${xml.slice(0, 400)}`);
    const guest = new GuestShell({ libvirtUri, uuid: serverId, name: serverId, consoleLog, shellSocket, persistent: true });
    await guest.waitReady(Math.max(1_000, deadline - Date.now()));
    const device = await guest.deviceForSerial(volumeId, 30_000);
    if (!device) throw new Error(`the guest shows no disk with serial ${volumeId}`);
    const beforeBytes = (await guest.sizes())[device];
    if (beforeBytes === undefined) throw new Error(`the guest reports no size for ${device}`);
    open('guest-ready');
    for (;;) {
      alive(`volume ${volumeId} at ${targetGiB} GiB in the volume API`);
      if ((await api.getVolume(volumeId))?.size === targetGiB) break;
      await sleep(100);
    }
    const afterBytes = await guest.waitForSize(device, targetGiB * 2 ** 30, Math.max(1_000, deadline - Date.now()));
    const history = sizeHistory(await guest.readLog(), device);
    return { volumeId, serverId, device, beforeBytes, afterBytes, history };
  })();
  const gated = result.finally(() => {
    open('guest-ready');
    open('guest-read');
  });
  gated.catch(() => undefined);
  return { result: gated };
}
