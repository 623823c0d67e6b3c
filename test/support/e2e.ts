/**
 * End-to-end support shared by test/e2e and bench/libvirt.ts: the lab (reused if one is already
 * up in the default lab dir, else a private one in a temp dir that `release()` takes down again),
 * the real compute app (LibvirtDriver on the lab's libvirtd, SQLite in a temp dir) listening on
 * 127.0.0.1, and a tiny fetch client for it.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { buildComputeApp, type ComputeApp } from '../../src/app.js';
import { issueToken } from '../../src/auth/tokens.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { defaultLabDir, labDown, labHealthy, labUp, readLab, type LabInfo } from '../../src/lab/index.js';
import { LibvirtDriver } from '../../src/virt/libvirt/driver.js';
import { Metrics } from '../../src/util/metrics.js';

/** Why the end-to-end tests cannot run here, or undefined. */
export function e2eMissing(): string | undefined {
  if (process.platform !== 'linux') return 'the lab needs Linux';
  if (process.getuid?.() !== 0) return 'the lab needs root (private mount namespace, loop devices)';
  for (const bin of ['libvirtd', 'virsh', 'unshare', 'qemu-system-x86_64', 'qemu-img', 'losetup', 'tgtd', 'tgtadm', 'iscsi-readcapacity16']) {
    if (spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0) return `${bin} is not installed`;
  }
  return undefined;
}

export interface E2eLab {
  lab: LabInfo;
  /** True if this process brought the lab up (and `release` takes it down). */
  owned: boolean;
  /** A private scratch dir for volumes, the database, sockets (removed by `release`). */
  work: string;
  release(): Promise<void>;
}

/**
 * The default lab (`<repo>/.lab`) if it is up and healthy (left running afterwards), otherwise a
 * private lab in a temp dir that `release()` takes down. `OE_E2E_PRIVATE_LAB=1` forces a private one.
 */
export async function acquireLab(log: (m: string) => void = () => {}): Promise<E2eLab> {
  const work = mkdtempSync(join(tmpdir(), 'oe-e2e-'));
  if (process.env.OE_E2E_PRIVATE_LAB !== '1') {
    const existing = readLab(defaultLabDir());
    if (existing && (await labHealthy(existing).catch(() => false))) {
      // labUp is idempotent on a healthy lab; it also refreshes the guest image if its scripts changed.
      const lab = await labUp({ dir: existing.dir, install: false, log });
      log(`reusing the lab in ${lab.dir}`);
      return { lab, owned: false, work, release: async () => rmSync(work, { recursive: true, force: true }) };
    }
  }
  const dir = join(work, 'lab');
  try {
    const lab = await labUp({ dir, log });
    return {
      lab,
      owned: true,
      work,
      release: async () => {
        try {
          await labDown({ dir, log });
        } finally {
          rmSync(work, { recursive: true, force: true });
        }
      },
    };
  } catch (err) {
    await labDown({ dir }).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
    throw err;
  }
}

export interface E2eApi {
  /** `http://127.0.0.1:PORT` */
  url: string;
  token: string;
  tenant: string;
  built: ComputeApp;
  driver: LibvirtDriver;
  store: SqliteStore;
  /** One request with the admin token; `body` is sent as JSON. */
  call(method: string, path: string, body?: unknown): Promise<ApiResponse>;
  close(): Promise<void>;
}

export interface ApiResponse {
  status: number;
  headers: Headers;
  /** Parsed JSON, or undefined for an empty body. */
  body: unknown;
}

/** The whole compute stack on the lab's libvirtd, listening on a real port. */
export async function startApi(lab: LabInfo, opts: { tenant: string; dbDir: string; logLevel?: string; serverTimingDetail?: boolean }): Promise<E2eApi> {
  const store = new SqliteStore(join(opts.dbDir, 'online-extend.sqlite'));
  const logger = pino({ level: opts.logLevel ?? 'silent' });
  const driver = new LibvirtDriver({ uri: lab.libvirtUri, defaultProjectId: opts.tenant, logger: logger.child({ component: 'libvirt' }) });
  let built: ComputeApp | undefined;
  try {
    // serverTimingDetail: Server-Timing's per-layer parts, as `serve --server-timing-detail` (its metrics too).
    const timing = opts.serverTimingDetail ? { metrics: new Metrics(), timingDetail: true } : {};
    built = await buildComputeApp({ store, driver, logger, defaultProject: opts.tenant, ...timing });
    const { token } = await issueToken(store, { userId: 'e2e', projectId: opts.tenant, roles: ['admin'], ttlMs: 3_600_000 });
    const url = await built.app.listen({ host: '127.0.0.1', port: 0 });
    const app = built;
    const call = async (method: string, path: string, body?: unknown): Promise<ApiResponse> => {
      const res = await fetch(`${url}${path}`, {
        method,
        headers: { 'x-auth-token': token, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const text = await res.text();
      return { status: res.status, headers: res.headers, body: text ? (JSON.parse(text) as unknown) : undefined };
    };
    return {
      url,
      token,
      tenant: opts.tenant,
      built: app,
      driver,
      store,
      call,
      close: async () => {
        await app.app.close().catch(() => undefined);
        await driver.close().catch(() => undefined);
        await store.close().catch(() => undefined);
      },
    };
  } catch (err) {
    await built?.app.close().catch(() => undefined);
    await driver.close().catch(() => undefined);
    await store.close().catch(() => undefined);
    throw err;
  }
}

/** The three os-online_extend_volume paths. */
export const paths = {
  rescan: (tenant: string, server: string) => `/v2/${tenant}/servers/${server}/os-online_extend_volume`,
  volume: (tenant: string, server: string, volume: string) => `/v2/${tenant}/servers/${server}/os-online_extend_volume/${volume}`,
  actions: (tenant: string, server: string) => `/v2/${tenant}/servers/${server}/os-instance-actions`,
  /** Our extension with each action's finish time, result, message and details. */
  actionDetails: (tenant: string, server: string) => `/v2/${tenant}/servers/${server}/os-instance-action-details`,
};

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
