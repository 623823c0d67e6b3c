/**
 * Composition root: builds the store, driver, compute manager and APIs from a Config.
 * Tests build the same pieces with their own driver and store through `buildComputeApp`.
 */
import pino, { type Logger } from 'pino';
import { join } from 'node:path';
import type { Config } from './config.js';
import { SqliteStore } from './db/sqlite.js';
import type { Store } from './db/store.js';
import { PolicyEnforcer } from './auth/policy.js';
import { TokenAuthenticator } from './auth/tokens.js';
import { ComputeManager } from './compute/manager.js';
import { LocalComputeRpc } from './compute/rpc.js';
import { ComputeAPI } from './compute/api.js';
import type { VolumeAttacher } from './compute/attacher.js';
import type { VirtDriver } from './virt/driver.js';
import { FakeDriver } from './virt/fake/driver.js';
import { createServer, type App } from './api/server.js';
import { registerOnlineExtendVolume } from './api/routes/compute/onlineExtendVolume.js';
import { registerServers } from './api/routes/compute/servers.js';

export interface ComputeAppDeps {
  store: Store;
  driver: VirtDriver;
  logger: Logger;
  policy?: PolicyEnforcer;
  computeHost?: string;
  defaultProject?: string;
  attacher?: VolumeAttacher;
}

export interface ComputeApp {
  app: App;
  manager: ComputeManager;
  compute: ComputeAPI;
  auth: TokenAuthenticator;
  policy: PolicyEnforcer;
}

export async function buildComputeApp(deps: ComputeAppDeps): Promise<ComputeApp> {
  const manager = new ComputeManager({
    host: deps.computeHost ?? 'compute-1',
    driver: deps.driver,
    store: deps.store,
    defaultProjectId: deps.defaultProject ?? 'admin',
    logger: deps.logger.child({ component: 'compute-manager' }),
  });
  const compute = new ComputeAPI({ store: deps.store, rpc: new LocalComputeRpc(manager), logger: deps.logger.child({ component: 'compute-api' }) });
  const auth = new TokenAuthenticator(deps.store);
  const policy = deps.policy ?? new PolicyEnforcer();
  const app = await createServer({ logger: deps.logger, auth, policy, title: 'online-extend compute API' });
  const routeDeps = { logger: deps.logger, auth, policy, title: '', compute, ...(deps.attacher ? { attacher: deps.attacher } : {}) };
  registerOnlineExtendVolume(app, routeDeps);
  registerServers(app, routeDeps);
  await manager.syncInventory();
  return { app, manager, compute, auth, policy };
}

export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'online-extend' } });
}

export function openStore(config: Pick<Config, 'dataDir'>): Store {
  return new SqliteStore(join(config.dataDir, 'online-extend.sqlite'));
}

export async function createDriver(config: Config, logger: Logger): Promise<VirtDriver> {
  if (config.driver === 'fake') {
    return FakeDriver.fromInventoryFile(config.fakeInventory!, { statePath: join(config.dataDir, 'fake-hypervisor.json') });
  }
  const { LibvirtDriver } = await import('./virt/libvirt/driver.js');
  return new LibvirtDriver({ uri: config.libvirtUri, defaultProjectId: config.defaultProject, logger: logger.child({ component: 'libvirt' }) });
}
