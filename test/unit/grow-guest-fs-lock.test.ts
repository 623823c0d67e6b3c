/**
 * ComputeManager.growGuestFilesystem runs under the volume's lock, as extendAttached does: a
 * grow asked while the disk is being resized waits for the resize and grows the filesystem to
 * the new size; a driver without the capability is refused before the guest is asked.
 */
import pino from 'pino';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ComputeManager } from '../../src/compute/manager.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { FakeDriver } from '../../src/virt/fake/driver.js';

const MiB = 2 ** 20;
const SRV = '44444444-4444-4444-8444-444444444444';
const VOL = 'cccccccc-0000-4000-8000-000000000001';
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function managerWith(driver: FakeDriver): ComputeManager {
  const dir = mkdtempSync(join(tmpdir(), 'oe-growfs-lock-'));
  const store = new SqliteStore(join(dir, 'db.sqlite'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }), () => store.close());
  return new ComputeManager({ host: 'h1', driver, store, defaultProjectId: 'p', logger: pino({ level: 'silent' }) });
}

const disk = () => ({ volumeId: VOL, device: 'vdb', kind: 'block' as const, backingBytes: 128 * MiB, hostBytes: 128 * MiB, guestBytes: 64 * MiB });

describe('ComputeManager.growGuestFilesystem', () => {
  it('waits for a resize of the same volume under way and grows the filesystem to the resized disk', async () => {
    const driver = new FakeDriver({ servers: [{ id: SRV, name: 'vm', state: 'active', disks: [disk()] }] });
    driver.setGuestFilesystem(SRV, VOL, { type: 'ext4', mountpoint: '/data' });
    const m = managerWith(driver);
    // Every driver call takes 50 ms: without the lock the grow would read the disk before the resize.
    driver.latencyMs = 50;
    const [measured, growth] = await Promise.all([m.extendAttached(SRV, VOL, 128 * MiB), m.growGuestFilesystem(SRV, VOL)]);
    expect(measured).toBe(128 * MiB);
    expect(growth).toMatchObject({ grown: true, fsBytesBefore: 64 * MiB, fsBytes: 128 * MiB });
    // The operator-only detail never leaves the manager.
    expect(growth).not.toHaveProperty('detail');
  });

  it('answers GuestFilesystemGrowNotSupported (501) without asking the guest when the driver cannot', async () => {
    const driver = new FakeDriver({ capabilities: { growGuestFilesystem: false }, servers: [{ id: SRV, name: 'vm', state: 'active', disks: [disk()] }] });
    const m = managerWith(driver);
    await expect(m.growGuestFilesystem(SRV, VOL)).rejects.toMatchObject({ code: 'GuestFilesystemGrowNotSupported', status: 501, final: true });
    expect(driver.calls.growGuestFilesystem).toBe(0);
  });

  it('passes an answer with no filesystem through as an answer, without its detail text', async () => {
    const driver = new FakeDriver({ servers: [{ id: SRV, name: 'vm', state: 'active', disks: [disk()] }] });
    const growth = await managerWith(driver).growGuestFilesystem(SRV, VOL);
    expect(growth).toEqual({ grown: false, reason: 'no_filesystem', partitionGrown: false, device: '/dev/vdb' });
  });
});
