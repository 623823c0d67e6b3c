/** A whole service (compute + volume APIs) in-process on the fake driver, over real HTTP. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type Config } from '../../src/config.js';
import { startService, type RunningService } from '../../src/app.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { issueToken } from '../../src/auth/tokens.js';
import { ApiClient, VOLUME_LATEST } from '../../src/rpc/httpClient.js';
import { runBin, type CliRun } from './build.js';

export const PROJECT = 'p-demo';
export const SERVER = '5d7e0c4a-1111-4a22-9b33-0c4d5e6f7a8b';

export function fakeInventory(capabilities: { extend_volume?: boolean } = {}): object {
  return {
    capabilities: { extend_volume: true, ...capabilities },
    servers: [{ id: SERVER, name: 'vm-1', project_id: PROJECT, state: 'active', disks: [] }],
  };
}

export interface ServiceHarness {
  dir: string;
  config: Config;
  service: RunningService;
  token: string;
  compute: ApiClient;
  volume: ApiClient;
  start(overrides?: Partial<Config>): Promise<void>;
  stop(): Promise<void>;
  cleanup(): Promise<void>;
}

/** `dataRoot`: where the temp dir goes (a test may put the data dir on its own filesystem). */
export async function makeService(opts: { inventory?: object; config?: Partial<Config>; dataRoot?: string } = {}): Promise<ServiceHarness> {
  const dir = mkdtempSync(join(opts.dataRoot ?? tmpdir(), 'oe-svc-'));
  const inv = join(dir, 'inventory.json');
  writeFileSync(inv, JSON.stringify(opts.inventory ?? fakeInventory()));
  const base = loadConfig({}, { dataDir: join(dir, 'data'), driver: 'fake', fakeInventory: inv, port: 0, volumePort: 0, identityPort: 0, imagePort: 0, syncIntervalMs: 0, logLevel: 'silent' });
  const tokenStore = new SqliteStore(join(base.dataDir, 'online-extend.sqlite'));
  const { token } = await issueToken(tokenStore, { userId: 'tester', projectId: PROJECT, roles: ['admin'], ttlMs: 3_600_000 });
  await tokenStore.close();
  const h: ServiceHarness = {
    dir,
    config: base,
    service: undefined as unknown as RunningService,
    token,
    compute: undefined as unknown as ApiClient,
    volume: undefined as unknown as ApiClient,
    async start(overrides = {}) {
      h.config = { ...base, ...opts.config, ...overrides };
      h.service = await startService(h.config);
      h.compute = new ApiClient({ url: h.service.computeUrl, token });
      h.volume = new ApiClient({ url: h.service.volumeUrl!, token, headers: VOLUME_LATEST });
    },
    async stop() {
      await h.service.close();
    },
    async cleanup() {
      await h.service?.close().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await h.start();
  return h;
}

export type { CliRun } from './build.js';

/** Runs `online-extend ARGS` (the built bin) against `h`'s service as its admin, with warn-level logs; output trimmed. */
export function runCli(h: ServiceHarness, args: string[]): Promise<CliRun> {
  return runBin(args, { env: { ...process.env, ONLINE_EXTEND_VOLUME_URL: h.service.volumeUrl!, ONLINE_EXTEND_URL: h.service.computeUrl, ONLINE_EXTEND_TOKEN: h.token, ONLINE_EXTEND_PROJECT: PROJECT } });
}
