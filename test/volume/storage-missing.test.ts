/**
 * A volume whose storage was removed or replaced by hand (its record is still there): every
 * request that needs the storage answers VolumeStorageMissing (500, final) saying so, never a 404
 * for a volume the API lists, and nothing changes; it can still be deleted. Storage that goes
 * missing while an extend runs ends that extend in error with the same code, the recorded size
 * unchanged, and the volume's record and action say what happened.
 * "Missing" (storageChecked.ts): nothing there, a directory, an empty file, or for an encrypted
 * volume a file no longer than its LUKS header.
 * Real service (fake driver, file backend, real HTTP), real files.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SqliteStore } from '../../src/db/sqlite.js';
import { ApiError } from '../../src/rpc/httpClient.js';
import type { FakeDriver } from '../../src/virt/fake/driver.js';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';
import { volumeStorageFile } from '../support/files.js';

const MiB = 2 ** 20;
/** Sleep before every extend step in `slow`: time to take the storage away between two steps. */
const STEP_DELAY_MS = 400;
let h: ServiceHarness;
let slow: ServiceHarness;
beforeAll(async () => {
  [h, slow] = await Promise.all([makeService(), makeService({ config: { extendStepDelayMs: STEP_DELAY_MS } })]);
});
afterAll(async () => {
  await Promise.all([h?.cleanup(), slow?.cleanup()]);
});

interface Vol {
  id: string;
  status: string;
  size_bytes: number;
  extend: { step: string; error: string | null; error_code: string | null } | null;
}
interface Action { request_id: string; action: string; result: string | null; message: string | null }
const show = async (s: ServiceHarness, id: string) => (await s.volume.request<{ volume: Vol }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume;
const actions = async (s: ServiceHarness, id: string) =>
  (await s.volume.request<{ volumeActions: Action[] }>('GET', `/v3/${PROJECT}/volumes/${id}/os-volume-actions`)).body.volumeActions;
const fails = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected a refusal');
    },
    (e: unknown) => {
      if (!(e instanceof ApiError)) throw e;
      return e;
    },
  );
const extend = (s: ServiceHarness, id: string, bytes: number) => s.volume.request('POST', `/v3/${PROJECT}/volumes/${id}/action`, { 'os-extend-bytes': { new_bytes: bytes } });
const attach = (s: ServiceHarness, id: string) =>
  s.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
const driver = (s: ServiceHarness) => s.service.driver as FakeDriver;
const guestBytes = (s: ServiceHarness, id: string) => driver(s).snapshot(SERVER).disks.find((d) => d.volumeId === id)?.guestBytes;

async function until<T>(what: string, probe: () => Promise<T> | T, ok: (x: T) => boolean, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const x = await probe();
    if (ok(x)) return x;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

type Encryption = 'none' | 'luks';
async function volume(s: ServiceHarness, encryption: Encryption, attached: boolean): Promise<{ id: string; file: string }> {
  const id = (await s.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * MiB, ...(encryption === 'luks' ? { encryption: 'luks' } : {}) } })).body.volume.id;
  if (attached) await attach(s, id);
  return { id, file: volumeStorageFile(s.config.dataDir, id) };
}

/** What replaces the storage, and a check that it is still there untouched afterwards. */
const DAMAGES = [
  { damage: 'removed', make: (f: string) => rmSync(f), left: (f: string) => expect(() => statSync(f)).toThrow(/ENOENT/) },
  { damage: 'replaced by a directory', make: (f: string) => (rmSync(f), mkdirSync(f)), left: (f: string) => expect(statSync(f).isDirectory()).toBe(true) },
  { damage: 'replaced by an empty file', make: (f: string) => (rmSync(f), writeFileSync(f, '')), left: (f: string) => expect(statSync(f).size).toBe(0) },
];
/** Encrypted only: a file shorter than the LUKS header (about 2 MiB) is no volume either. */
const SHORT = { damage: 'replaced by a file shorter than its LUKS header', make: (f: string) => (rmSync(f), writeFileSync(f, Buffer.alloc(MiB))), left: (f: string) => expect(statSync(f).size).toBe(MiB) };
const CASES = [
  ...DAMAGES.flatMap((d) => (['none', 'luks'] as const).map((encryption) => ({ ...d, encryption }))),
  { ...SHORT, encryption: 'luks' as const },
];

const refusedBeforeAnything = (id: string) =>
  `The storage of volume ${id} is missing from its file backend; nothing was changed. An operator must restore it, or delete the volume.`;

describe.each(CASES)('a volume (encryption $encryption) whose storage was $damage', ({ encryption, make, left }) => {
  it.each([{ attached: false }, { attached: true }])('is refused an extend (attached: $attached) with VolumeStorageMissing, saying so, and nothing changes', async ({ attached }) => {
    const { id, file } = await volume(h, encryption, attached);
    const resizes = driver(h).calls.extendAttached;
    make(file);
    const before = await show(h, id);
    const err = await fails(extend(h, id, 128 * MiB));
    expect(err).toMatchObject({ code: 'VolumeStorageMissing', status: 500, final: true });
    expect(err.message).toBe(refusedBeforeAnything(id));
    expect(err.message).not.toContain('/');
    const after = await show(h, id);
    expect(after).toMatchObject({ status: before.status, size_bytes: 64 * MiB, extend: before.extend });
    expect(driver(h).calls.extendAttached).toBe(resizes);
    left(file);
  });

  it('is refused an attach with VolumeStorageMissing, saying so, and stays available and detached', async () => {
    const { id, file } = await volume(h, encryption, false);
    const attaches = driver(h).calls.attachVolume;
    make(file);
    const err = await fails(attach(h, id));
    expect(err).toMatchObject({ code: 'VolumeStorageMissing', status: 500, final: true });
    expect(err.message).toBe(refusedBeforeAnything(id));
    expect(await show(h, id)).toMatchObject({ status: 'available', size_bytes: 64 * MiB });
    expect(driver(h).calls.attachVolume).toBe(attaches);
    expect(driver(h).snapshot(SERVER).disks.some((d) => d.volumeId === id)).toBe(false);
    left(file);
  });
});

describe('storage that goes missing while an extend runs', () => {
  const wentMissing = (id: string) =>
    `The storage of volume ${id} went missing from its file backend during the extend, which stopped there; the volume keeps its recorded size. An operator must restore it, or delete the volume.`;

  /** The extend's end: the error it recorded, the action, and the size left unchanged. */
  async function expectEndedMissing(id: string, status: string, file: string, left: (f: string) => void): Promise<void> {
    const v = await until('the extend to end', () => show(slow, id), (x) => x.status !== 'extending');
    expect(v).toMatchObject({ status, size_bytes: 64 * MiB, extend: { error_code: 'VolumeStorageMissing' } });
    expect(v.extend!.error).toBe(`step ${v.extend!.step}: ${wentMissing(id)}`);
    expect(v.extend!.error).not.toContain('/');
    const [latest] = await actions(slow, id);
    expect(latest).toMatchObject({ action: 'extend', result: 'Error', message: v.extend!.error });
    left(file);
  }

  it.each(CASES.filter((c) => c.damage !== SHORT.damage))(
    'ends an in-use extend (encryption $encryption) whose storage was $damage before a step in error_extending with VolumeStorageMissing, the size unchanged',
    async ({ encryption, make, left }) => {
      const { id, file } = await volume(slow, encryption, true);
      const resizes = driver(slow).calls.extendAttached;
      expect((await extend(slow, id, 128 * MiB)).status).toBe(202);
      make(file);
      await expectEndedMissing(id, 'error_extending', file, left);
      // QEMU was never asked to grow what stands there now.
      expect(driver(slow).calls.extendAttached).toBe(resizes);
      expect(guestBytes(slow, id)).toBe(64 * MiB - (encryption === 'luks' ? 2_068_480 : 0));
    },
  );

  it.each(DAMAGES)('ends a detached extend whose storage was $damage before its storage step with VolumeStorageMissing, the volume available at its size', async ({ make, left }) => {
    const { id, file } = await volume(slow, 'none', false);
    const answer = fails(extend(slow, id, 128 * MiB));
    await until('the extend to start', () => show(slow, id), (x) => x.status === 'extending');
    make(file);
    const err = await answer;
    expect(err).toMatchObject({ code: 'VolumeStorageMissing', status: 500, final: true, message: wentMissing(id) });
    await expectEndedMissing(id, 'available', file, left);
  });

  it('ends an in-use extend whose file was removed while QEMU grew it, without recording the size QEMU reported', async () => {
    const { id, file } = await volume(slow, 'none', true);
    const resizes = driver(slow).calls.extendAttached;
    expect((await extend(slow, id, 128 * MiB)).status).toBe(202);
    // The fake counts the resize when it starts, then waits its latency: the file goes then.
    driver(slow).latencyMs = 1_000;
    try {
      await until('QEMU to be asked to grow the disk', () => driver(slow).calls.extendAttached, (n) => n > resizes);
      rmSync(file);
      await expectEndedMissing(id, 'error_extending', file, (f) => expect(() => statSync(f)).toThrow(/ENOENT/));
    } finally {
      driver(slow).latencyMs = 0;
    }
    // The fake hypervisor grew the disk it had open (as QEMU grows an unlinked file); the record did not follow.
    expect(guestBytes(slow, id)).toBe(128 * MiB);
    expect((await show(slow, id)).extend!.step).toBe('confirm');
  });
});

describe('healthy storage', () => {
  it.each([
    { encryption: 'none' as const, attached: false },
    { encryption: 'none' as const, attached: true },
    { encryption: 'luks' as const, attached: false },
    { encryption: 'luks' as const, attached: true },
  ])('extends a volume (encryption $encryption, attached: $attached) as before: the record and the file grow', async ({ encryption, attached }) => {
    const { id, file } = await volume(h, encryption, attached);
    await extend(h, id, 128 * MiB);
    const v = await until('the extend to end', () => show(h, id), (x) => x.status !== 'extending');
    expect(v).toMatchObject({ status: attached ? 'in-use' : 'available', size_bytes: 128 * MiB, extend: null });
    expect(statSync(file).size).toBe(128 * MiB);
  });
});

it.each(DAMAGES)('still deletes a volume whose storage was $damage, leaving a directory that stands there alone', async ({ damage, make }) => {
  const { id, file } = await volume(h, 'none', false);
  make(file);
  expect((await h.volume.request('DELETE', `/v3/${PROJECT}/volumes/${id}`)).status).toBe(202);
  await until(
    'the volume to be gone',
    () => h.volume.request('GET', `/v3/${PROJECT}/volumes/${id}`).then(() => false, (e: unknown) => e instanceof ApiError && e.status === 404),
    (gone) => gone,
    5_000,
  );
  if (damage === 'replaced by a directory') expect(statSync(file).isDirectory()).toBe(true);
  else expect(() => statSync(file)).toThrow(/ENOENT/);
});

describe('an extending volume without a workflow state (recovery case 6) at start-up', () => {
  it.each([
    { name: 'whose file was grown to 128 MiB goes back to available at the size measured', damage: (f: string) => truncateSync(f, 128 * MiB), status: 'available', bytes: 128 * MiB },
    { name: 'whose storage was removed goes back to available at its recorded size, not retried forever', damage: (f: string) => rmSync(f), status: 'available', bytes: 64 * MiB },
    { name: 'whose storage was replaced by a directory goes back to available at its recorded size', damage: (f: string) => (rmSync(f), mkdirSync(f)), status: 'available', bytes: 64 * MiB },
  ])('$name', async ({ damage, status, bytes }) => {
    const own = await makeService();
    try {
      const { id, file } = await volume(own, 'none', false);
      await own.stop();
      const store = new SqliteStore(join(own.config.dataDir, 'online-extend.sqlite'));
      try {
        expect(await store.updateVolume(id, { status: ['available'] }, { status: 'extending', extend: null })).toBe(true);
      } finally {
        await store.close();
      }
      damage(file);
      await own.start();
      const v = await until('the volume to be put back at rest', () => show(own, id), (x) => x.status !== 'extending');
      expect(v).toMatchObject({ status, size_bytes: bytes, extend: null });
    } finally {
      await own.cleanup();
    }
  });
});
