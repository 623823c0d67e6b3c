/**
 * The whole product on a real lab, as `src/demo.ts` runs it: a private lab (its own libvirtd and
 * tgtd, in a temp dir), the service in-process (`startService`: compute + volume APIs, libvirt
 * driver, backends file/block/iscsi, SQLite), and one lab guest. Used by
 * test/e2e/volume.e2e.test.ts and bench/e2e.ts. One guest per caller: TCG takes about a core.
 *
 * The service's data dir lives inside the lab dir, so `labDown` also detaches any loop device and
 * removes any file a failed run left behind; `close()` first releases volumes through the APIs.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startService, type RunningService } from '../../src/app.js';
import { issueToken } from '../../src/auth/tokens.js';
import type { Config } from '../../src/config.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { ApiClient, ApiError, VOLUME_LATEST } from '../../src/rpc/httpClient.js';
import { bootGuest, labDown, labServiceFlags, labUp, type GuestShell, type LabInfo } from '../../src/lab/index.js';
import { loadConfig } from '../../src/config.js';

export interface VolumeView {
  id: string;
  status: string;
  size: number;
  size_bytes: number;
  volume_type: string;
  format: string | null;
  attachments: Array<{ server_id: string; device: string }>;
  extend: {
    request_id: string;
    step: string;
    target_bytes: number;
    error: string | null;
    attempts: number;
    /** The last retryable error of the extend (it goes on). */
    last_error?: { step: string; code: string; message: string; at: string } | null;
  } | null;
}

export interface VolumeActionView {
  request_id: string;
  action: string;
  start_time: string;
  finish_time: string | null;
  result: string | null;
  message: string | null;
  compute_request_ids: string[];
  details: Record<string, unknown>;
}

/** An instance action as our os-instance-action-details extension shows it (Nova's own view has no finish time, result or details). */
export interface InstanceActionView {
  action: string;
  event: string;
  request_id: string;
  start_time: string;
  finish_time: string | null;
  result: string | null;
  message: string | null;
  details: Record<string, unknown> | null;
}

export interface LabService {
  lab: LabInfo;
  /** The lab dir (a temp dir); the service's data dir is `<dir>/service`. */
  dir: string;
  dataDir: string;
  config: Config;
  service: RunningService;
  project: string;
  compute: ApiClient;
  volume: ApiClient;
  guest: GuestShell;
  /** Volumes created through `createVolume` and not yet deleted (released by `close`). */
  readonly volumes: Set<string>;
  createVolume(body: Record<string, unknown>): Promise<VolumeView>;
  show(id: string): Promise<VolumeView>;
  attach(id: string): Promise<void>;
  detach(id: string): Promise<void>;
  remove(id: string): Promise<void>;
  /** POST …/action; resolves with the HTTP status and request id, or rejects with ApiError. */
  extend(id: string, body: Record<string, unknown>): Promise<{ status: number; requestId: string | undefined }>;
  /** Poll the volume (every `intervalMs`) until it is no longer `extending`. */
  settle(id: string, timeoutMs?: number, intervalMs?: number): Promise<VolumeView>;
  volumeActions(id: string): Promise<VolumeActionView[]>;
  /** The guest's instance actions with their results and details (os-instance-action-details). */
  instanceActions(): Promise<InstanceActionView[]>;
  /** Release everything (volumes via the APIs, guest, service, lab, temp dir). Never throws. */
  close(): Promise<string[]>;
}

export interface LabServiceOptions {
  project: string;
  guestName: string;
  /** Define the guest's domain (it can be shut off and started again) instead of a transient one. */
  persistentGuest?: boolean;
  config?: Partial<Config>;
  log?: (m: string) => void;
}

/** The HTTP status of a request: 2xx, or the ApiError's status. */
export async function statusOf(p: Promise<unknown>): Promise<number> {
  try {
    const r = (await p) as { status?: number };
    return r.status ?? 200;
  } catch (err) {
    if (err instanceof ApiError) return err.status;
    throw err;
  }
}

export async function startLabService(opts: LabServiceOptions): Promise<LabService> {
  const log = opts.log ?? (() => {});
  const P = opts.project;
  const dir = mkdtempSync(join(tmpdir(), 'oe-vole2e-'));
  let lab: LabInfo | undefined;
  let service: RunningService | undefined;
  let guest: GuestShell | undefined;
  const teardown = async (errs: string[]): Promise<void> => {
    await guest?.destroy().catch((e: unknown) => errs.push(`guest destroy: ${(e as Error).message}`));
    await service?.close().catch((e: unknown) => errs.push(`service close: ${(e as Error).message}`));
    await labDown({ dir, log }).catch((e: unknown) => errs.push(`lab down: ${(e as Error).message}`));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    lab = await labUp({ dir, log });
    const dataDir = join(dir, 'service');
    const config: Config = {
      ...loadConfig({}, labServiceFlags(lab, { dataDir, backends: ['file', 'block', 'iscsi'], projectId: P, logLevel: 'silent' })),
      ...opts.config,
    };
    service = await startService(config);
    const store = new SqliteStore(join(dataDir, 'online-extend.sqlite'));
    let token: string;
    try {
      ({ token } = await issueToken(store, { userId: 'e2e', projectId: P, roles: ['admin'], ttlMs: 3_600_000 }));
    } finally {
      await store.close();
    }
    const compute = new ApiClient({ url: service.computeUrl, token });
    const volume = new ApiClient({ url: service.volumeUrl!, token, headers: VOLUME_LATEST });
    guest = await bootGuest(lab, { name: opts.guestName, projectId: P, ...(opts.persistentGuest ? { persistent: true } : {}) });
    const g = guest;
    const svc = service;
    const volumes = new Set<string>();
    const vpath = (id: string): string => `/v3/${P}/volumes/${id}`;
    const attachments = `/v2/${P}/servers/${g.uuid}/os-volume_attachments`;
    const ls: LabService = {
      lab,
      dir,
      dataDir,
      config,
      service: svc,
      project: P,
      compute,
      volume,
      guest: g,
      volumes,
      async createVolume(body) {
        const { id } = (await volume.request<{ volume: { id: string } }>('POST', `/v3/${P}/volumes`, { volume: body })).body.volume;
        volumes.add(id);
        // Cinder's answer has the size in GiB only: our own view has the exact bytes.
        return (await volume.request<{ volume: VolumeView }>('GET', `${vpath(id)}/os-online-extend`)).body.volume;
      },
      async show(id) {
        return (await volume.request<{ volume: VolumeView }>('GET', `${vpath(id)}/os-online-extend`)).body.volume;
      },
      async attach(id) {
        await compute.request('POST', attachments, { volumeAttachment: { volumeId: id } });
      },
      async detach(id) {
        await compute.request('DELETE', `${attachments}/${id}`);
      },
      async remove(id) {
        await volume.request('DELETE', vpath(id));
        volumes.delete(id);
      },
      async extend(id, body) {
        const r = await volume.request('POST', `${vpath(id)}/action`, body);
        return { status: r.status, requestId: r.requestId };
      },
      async settle(id, timeoutMs = 60_000, intervalMs = 20) {
        const end = Date.now() + timeoutMs;
        for (;;) {
          const v = await ls.show(id);
          if (v.status !== 'extending') return v;
          if (Date.now() > end) throw new Error(`volume ${id} still extending at step ${v.extend?.step} after ${timeoutMs} ms`);
          await sleep(intervalMs);
        }
      },
      async volumeActions(id) {
        return (await volume.request<{ volumeActions: VolumeActionView[] }>('GET', `${vpath(id)}/os-volume-actions`)).body.volumeActions;
      },
      async instanceActions() {
        return (await compute.request<{ instanceActionDetails: InstanceActionView[] }>('GET', `/v2/${P}/servers/${g.uuid}/os-instance-action-details`)).body.instanceActionDetails;
      },
      async close() {
        const errs: string[] = [];
        for (const id of [...volumes]) {
          // An extend still running must end first: delete refuses `extending`.
          await ls.settle(id, 30_000).catch(() => undefined);
          const v = await ls.show(id).catch(() => undefined);
          if (v?.attachments.length) await ls.detach(id).catch((e: unknown) => errs.push(`detach ${id}: ${(e as Error).message}`));
          await ls.remove(id).catch((e: unknown) => errs.push(`delete ${id}: ${(e as Error).message}`));
        }
        await teardown(errs);
        return errs;
      },
    };
    return ls;
  } catch (err) {
    await teardown([]);
    throw err;
  }
}

