/**
 * One contract suite for every storage backend (the volume service's Cinder drivers).
 * Each `*.test.ts` here only says how to build its backend and calls `describeBackendContract`.
 *
 * Data checks go through the connection the backend hands out, the way QEMU reaches the volume:
 * `qemu-io` opens the file (raw/qcow2), the block device, or the iSCSI LUN itself.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isServiceError, type ErrorCode } from '../../src/errors.js';
import type { VolumeBackend } from '../../src/volume/backends/backend.js';
import { execRaw } from '../../src/volume/backends/exec.js';
import type { AttachSpec } from '../../src/virt/driver.js';

export interface BackendHarness {
  backend: VolumeBackend;
  /** Remove whatever the harness made (volumes, loop devices, targets, directories). */
  teardown(): Promise<void>;
  /** A second instance over the same storage, as a restarted volume service would build it (required: every backend can). */
  reopen: () => VolumeBackend;
}

const MiB = 1024 * 1024;

export function newVolumeId(): string {
  return `vol-${randomBytes(6).toString('hex')}`;
}

/** Expect a promise to reject with a catalogue error of the given code. */
export async function expectServiceError(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected ${code}`).toBeDefined();
  if (!isServiceError(caught)) throw caught;
  expect(caught.code, caught.message).toBe(code);
}

/** The arguments that make `qemu-io` open a volume the way QEMU would from its AttachSpec. */
export function qemuIoTarget(spec: AttachSpec): string[] {
  switch (spec.kind) {
    case 'file':
      return ['-f', spec.format ?? 'raw', spec.source];
    case 'block':
      return ['-f', 'raw', spec.source];
    case 'network':
      return ['-f', 'raw', `iscsi://${spec.portal ?? '127.0.0.1:3260'}/${spec.source}`];
  }
}

/** Run one qemu-io command against a volume; resolves true when it (incl. a pattern check) passed. */
export async function qemuIo(spec: AttachSpec, command: string): Promise<{ ok: boolean; output: string }> {
  const r = await execRaw('qemu-io', ['-c', command, ...qemuIoTarget(spec)], { timeoutMs: 20_000 });
  const output = r.stdout + r.stderr;
  return { ok: r.code === 0 && !/failed|error/i.test(output), output };
}

export function describeBackendContract(name: string, makeBackend: () => Promise<BackendHarness>): void {
  describe(`${name} backend contract`, () => {
    let h: BackendHarness;
    let backend: VolumeBackend;
    const made = new Set<string>();
    const vol = () => {
      const id = newVolumeId();
      made.add(id);
      return id;
    };

    beforeAll(async () => {
      h = await makeBackend();
      backend = h.backend;
    });

    afterAll(async () => {
      if (!h) return;
      try {
        for (const id of made) await backend.delete(id).catch(() => undefined);
      } finally {
        await h.teardown();
      }
    });

    it('creates a volume of exactly the requested size', async () => {
      const id = vol();
      const v = await backend.create(id, 8 * MiB);
      expect(v.volumeId).toBe(id);
      expect(v.bytes).toBe(8 * MiB);
      expect(await backend.getBytes(id)).toBe(8 * MiB);
      expect(await backend.exists(id)).toBe(true);
      expect(v.connection).toEqual(await backend.connection(id));
    });

    it('creates idempotently for the same id and size, and refuses a different size', async () => {
      const id = vol();
      const first = await backend.create(id, 4 * MiB);
      const again = await backend.create(id, 4 * MiB);
      expect(again).toEqual(first);
      expect(await backend.getBytes(id)).toBe(4 * MiB);
      await expectServiceError(backend.create(id, 6 * MiB), 'VolumeInvalidState');
      expect(await backend.getBytes(id)).toBe(4 * MiB);
    });

    it('extends and returns the size measured afterwards', async () => {
      const id = vol();
      await backend.create(id, 4 * MiB);
      expect(await backend.extend(id, 12 * MiB + 512)).toBe(12 * MiB + 512);
      expect(await backend.getBytes(id)).toBe(12 * MiB + 512);
    });

    it('treats an extend to the current size as a no-op', async () => {
      const id = vol();
      await backend.create(id, 4 * MiB);
      await backend.extend(id, 6 * MiB);
      expect(await backend.extend(id, 6 * MiB)).toBe(6 * MiB);
      expect(await backend.getBytes(id)).toBe(6 * MiB);
    });

    it('refuses to shrink and leaves the size unchanged', async () => {
      const id = vol();
      await backend.create(id, 8 * MiB);
      await expectServiceError(backend.extend(id, 4 * MiB), 'VolumeShrinkRefused');
      expect(await backend.getBytes(id)).toBe(8 * MiB);
    });

    it('answers VolumeNotFound (404) for an unknown volume', async () => {
      const id = newVolumeId();
      await expectServiceError(backend.extend(id, 8 * MiB), 'VolumeNotFound');
      await expectServiceError(backend.getBytes(id), 'VolumeNotFound');
      await expectServiceError(backend.connection(id), 'VolumeNotFound');
      expect(await backend.exists(id)).toBe(false);
      try {
        await backend.getBytes(id);
      } catch (err) {
        expect(isServiceError(err) && err.status).toBe(404);
      }
    });

    it('deletes idempotently, after which the volume no longer exists', async () => {
      const id = vol();
      await backend.create(id, 4 * MiB);
      await backend.delete(id);
      expect(await backend.exists(id)).toBe(false);
      await backend.delete(id);
      expect(await backend.exists(id)).toBe(false);
      await expectServiceError(backend.getBytes(id), 'VolumeNotFound');
      // The id is free again.
      await backend.create(id, 2 * MiB);
      expect(await backend.getBytes(id)).toBe(2 * MiB);
    });

    it('keeps the data written before an extend, and the new space reads as zeros', async () => {
      const id = vol();
      const { connection } = await backend.create(id, 4 * MiB);
      const wrote = await qemuIo(connection, 'write -P 0x5a 0 64k');
      expect(wrote.ok, wrote.output).toBe(true);
      const tail = await qemuIo(connection, `write -P 0xa5 ${4 * MiB - 4096} 4k`);
      expect(tail.ok, tail.output).toBe(true);
      await backend.extend(id, 16 * MiB);
      const conn = await backend.connection(id);
      const head = await qemuIo(conn, 'read -P 0x5a 0 64k');
      expect(head.ok, head.output).toBe(true);
      const oldEnd = await qemuIo(conn, `read -P 0xa5 ${4 * MiB - 4096} 4k`);
      expect(oldEnd.ok, oldEnd.output).toBe(true);
      if (conn.kind !== 'block') {
        // A block device shows the new size only after the host's rescan (tested in block.real.test.ts).
        const fresh = await qemuIo(conn, `read -P 0 ${8 * MiB} 64k`);
        expect(fresh.ok, fresh.output).toBe(true);
      }
    });

    it('hands out the connection shape of its kind', async () => {
      const id = vol();
      await backend.create(id, 2 * MiB);
      const c = await backend.connection(id);
      expect(c.volumeId).toBe(id);
      expect(c.source).toContain(id === '' ? '?' : c.kind === 'block' ? '/dev/loop' : id);
      switch (backend.name) {
        case 'file':
          expect(c.kind).toBe('file');
          expect(c.format === 'raw' || c.format === 'qcow2').toBe(true);
          expect(c.source).toMatch(new RegExp(`/${id}\\.${c.format}$`));
          break;
        case 'block':
          expect(c.kind).toBe('block');
          expect(c.source).toMatch(/^\/dev\/loop\d+$/);
          break;
        case 'iscsi':
          expect(c.kind).toBe('network');
          expect(c.source).toBe(`iqn.2026-11.dev.online-extend:${id}/1`);
          expect(c.portal).toMatch(/^[\d.]+:\d+$/);
          break;
        default:
          throw new Error(`no connection shape known for backend ${backend.name}`);
      }
    });

    it('rejects sizes that are not a positive multiple of 512 with InvalidInput', async () => {
      const id = vol();
      await expectServiceError(backend.create(id, 4 * MiB + 100), 'InvalidInput');
      await expectServiceError(backend.create(id, 0), 'InvalidInput');
      await expectServiceError(backend.create(id, 1000.5), 'InvalidInput');
      expect(await backend.exists(id)).toBe(false);
      await backend.create(id, 4 * MiB);
      await expectServiceError(backend.extend(id, 8 * MiB + 1), 'InvalidInput');
      expect(await backend.getBytes(id)).toBe(4 * MiB);
    });

    it('rejects volume ids that are not safe names with InvalidInput', async () => {
      await expectServiceError(backend.create('../etc/passwd', 4 * MiB), 'InvalidInput');
      await expectServiceError(backend.getBytes('a/b'), 'InvalidInput');
    });

    it('is found again, with the same connection, by a restarted service (no database)', async () => {
      const id = vol();
      const v = await backend.create(id, 4 * MiB);
      const restarted = h.reopen();
      expect(await restarted.exists(id)).toBe(true);
      expect(await restarted.getBytes(id)).toBe(4 * MiB);
      expect(await restarted.connection(id)).toEqual(v.connection);
      expect(await restarted.extend(id, 8 * MiB)).toBe(8 * MiB);
      expect(await backend.getBytes(id)).toBe(8 * MiB);
      await restarted.delete(id);
      expect(await backend.exists(id)).toBe(false);
    });

    it('serialises concurrent extends of one volume to the largest size', async () => {
      const id = vol();
      await backend.create(id, 4 * MiB);
      const results = await Promise.allSettled([6, 10, 8].map((m) => backend.extend(id, m * MiB)));
      // Whatever the order, no extend shrinks; the largest request wins.
      for (const r of results) {
        if (r.status === 'rejected') expect(isServiceError(r.reason) && r.reason.code).toBe('VolumeShrinkRefused');
      }
      expect(await backend.getBytes(id)).toBe(10 * MiB);
    });
  });
}
