/**
 * Many extends at once (the red team's run): 200 attached volumes, 5 requests each with random
 * targets, 1,000 requests in flight together, compute slowed down so every request's checks
 * overlap others' state changes. Each request must be accepted (202) only if its target is above
 * the size at the moment its state change applies, refused with 400 (not above the size) or 409
 * (another extend under way) otherwise, and every volume must end `in-use` at the largest target
 * accepted for it — in the record, in the guest and on the storage. Never error_extending.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { ApiError } from '../../src/rpc/httpClient.js';
import type { FakeDriver } from '../../src/virt/fake/driver.js';
import { makeService, PROJECT, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
const VOLUMES = 200;
const PER_VOLUME = 5;
const SERVERS = Array.from({ length: 10 }, (_, i) => `7a0c4a5d-4444-4a22-9b33-0c4d5e6f7a${String(i).padStart(2, '0')}`);
const SEED = Number(process.env.OE_TEST_SEED ?? Date.now() % 2 ** 31);

/** mulberry32: a seeded generator, so a failing run can be replayed with OE_TEST_SEED. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

let h: ServiceHarness;
const volumes: Array<{ id: string; server: string }> = [];

beforeAll(async () => {
  h = await makeService({
    inventory: { servers: SERVERS.map((id, i) => ({ id, name: `vm-${i}`, project_id: PROJECT, state: 'active', disks: [] })) },
  });
  for (let i = 0; i < VOLUMES; i++) {
    const v = (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: `c${i}`, size_bytes: 64 * MiB } })).body.volume;
    const server = SERVERS[i % SERVERS.length]!;
    await h.compute.request('POST', `/v2/${PROJECT}/servers/${server}/os-volume_attachments`, { volumeAttachment: { volumeId: v.id } });
    volumes.push({ id: v.id, server });
  }
}, 120_000);
afterAll(async () => h?.cleanup());

type Vol = { id: string; status: string; size_bytes: number; extend: { error: string | null } | null };

describe(`${VOLUMES * PER_VOLUME} concurrent extends over ${VOLUMES} attached volumes (seed ${SEED})`, () => {
  it('accepts a target only above the size where the change applies, and every volume ends in-use at its largest accepted target', async () => {
    console.log(`[concurrency] seed ${SEED} (replay with OE_TEST_SEED=${SEED})`);
    const random = rng(SEED);
    const driver = h.service.driver as FakeDriver;
    driver.latencyMs = 25; // every compute call takes a while: checks and changes overlap
    const requests = volumes.flatMap((v) =>
      Array.from({ length: PER_VOLUME }, () => ({ volume: v, target: (32 + Math.floor(random() * 160)) * MiB })),
    );
    const answers = await Promise.all(
      requests.map((r) =>
        h.volume.request('POST', `/v3/${PROJECT}/volumes/${r.volume.id}/action`, { 'os-extend-bytes': { new_bytes: r.target } }).then(
          (res) => ({ ...r, status: res.status, code: undefined as string | undefined }),
          (err: ApiError) => ({ ...r, status: err.status, code: err.code }),
        ),
      ),
    );
    const byStatus = new Map<number, number>();
    for (const a of answers) byStatus.set(a.status, (byStatus.get(a.status) ?? 0) + 1);
    console.log(`[concurrency] answers: ${[...byStatus].map(([s, n]) => `${s}×${n}`).join(', ')}`);
    for (const a of answers) {
      expect([202, 400, 409], `${a.status} ${a.code}`).toContain(a.status);
      if (a.status === 400) expect(a.code).toBe('InvalidInput');
      if (a.status === 409) expect(a.code).toBe('VolumeBusy');
    }
    // Every target at or below the starting size is refused, whatever else happens.
    for (const a of answers) if (a.target <= 64 * MiB) expect(a.status).toBe(400);

    const end = Date.now() + 60_000;
    let list: Vol[];
    for (;;) {
      list = (await h.volume.request<{ volumes: Vol[] }>('GET', `/v3/${PROJECT}/volumes/os-online-extend`)).body.volumes;
      if (!list.some((v) => v.status === 'extending')) break;
      if (Date.now() > end) throw new Error('extends still running after 60 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    driver.latencyMs = 0;
    const byId = new Map(list.map((v) => [v.id, v]));
    for (const v of volumes) {
      const accepted = answers.filter((a) => a.volume.id === v.id && a.status === 202).map((a) => a.target);
      const rec = byId.get(v.id)!;
      expect(rec.status, `volume ${v.id}: ${rec.extend?.error}`).toBe('in-use');
      const expected = Math.max(64 * MiB, ...accepted);
      expect(rec.size_bytes).toBe(expected);
      expect(driver.snapshot(v.server).disks.find((d) => d.volumeId === v.id)!.guestBytes).toBe(expected);
      expect(statSync(join(h.config.dataDir, 'volumes', 'file', `${v.id}.raw`)).size).toBe(expected);
    }
    expect(byStatus.get(202) ?? 0).toBeGreaterThanOrEqual(VOLUMES / 2);
  }, 120_000);
});
