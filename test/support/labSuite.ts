/**
 * What the lab end-to-end suites share (vitest only: bench/e2e.ts uses labService.ts without it):
 * one lab service per `describe`, data written in the guest and read back, create-and-attach.
 */
import { afterAll, beforeAll, expect } from 'vitest';
import type { GuestShell } from '../../src/lab/index.js';
import { startLabService, type LabService, type LabServiceOptions, type VolumeView } from './labService.js';

/**
 * One lab service with a guest for a whole `describe` block: started before its tests, closed
 * (and its cleanup checked) after. `tag` prefixes the log lines; the accessors throw until started.
 */
export function useLabService(opts: LabServiceOptions, tag: string): { S: () => LabService; G: () => GuestShell; log: (m: string) => void } {
  let s: LabService | undefined;
  const t0 = Date.now();
  const log = (m: string): void => console.log(`[${tag} +${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);
  beforeAll(async () => {
    s = await startLabService(opts);
    log(`lab, service and guest ${s.guest.name} ready`);
  }, 180_000);
  afterAll(async () => {
    const t = Date.now();
    const errs = (await s?.close()) ?? [];
    log(`teardown ${Date.now() - t} ms`);
    if (errs.length) throw new Error(`cleanup failed: ${errs.join('; ')}`);
  }, 120_000);
  const S = (): LabService => {
    if (!s) throw new Error('no lab service');
    return s;
  };
  return { S, G: () => S().guest, log };
}

/** A pattern of random data over the first `mib` MiB of a guest disk, and its md5 as the guest reads it. */
export function guestData(G: () => GuestShell, mib = 4): { writePattern(dev: string): Promise<string>; md5(dev: string): Promise<string> } {
  const md5Of = (out: string): string => {
    const m = /^([0-9a-f]{32})\b/m.exec(out);
    if (!m?.[1]) throw new Error(`no md5 from the guest: ${out}`);
    return m[1];
  };
  const readBack = `echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/DEV bs=1048576 count=${mib} 2>/dev/null | md5sum`;
  return {
    async writePattern(dev) {
      return md5Of(await G().exec(`dd if=/dev/urandom of=/dev/${dev} bs=1048576 count=${mib} conv=fsync 2>/dev/null && ${readBack.replace('DEV', dev)}`, 30_000));
    },
    async md5(dev) {
      return md5Of(await G().exec(readBack.replace('DEV', dev), 30_000));
    },
  };
}

/** Create through the volume API, attach through the compute API; the guest's device for it, at `bytes`. */
export async function createAttached(ls: LabService, body: Record<string, unknown>, bytes: number): Promise<{ v: VolumeView; dev: string }> {
  const v = await ls.createVolume(body);
  expect(v).toMatchObject({ status: 'available', size_bytes: bytes });
  await ls.attach(v.id);
  expect(await ls.show(v.id)).toMatchObject({ status: 'in-use', attachments: [{ server_id: ls.guest.uuid }] });
  const dev = await ls.guest.deviceForSerial(v.id, 20_000);
  if (!dev) throw new Error(`the guest never showed volume ${v.id}`);
  expect(await ls.guest.waitForSize(dev, bytes, 20_000)).toBe(bytes);
  return { v, dev };
}
