/**
 * The compute agent of one hypervisor host (Nova's nova-compute): `online-extend compute-agent
 * --host NAME` runs `startComputeAgent`. It owns the host's virt driver and ComputeManager (the
 * per-volume locks, rescans, inventory), answers compute RPC from the API processes over
 * RabbitMQ (rpc/amqp/server.ts), keeps the host's inventory in the shared database and writes
 * the host's heartbeat into Nova's `services` table.
 *
 * What it does at start (the host's part of Nova's init_host): it takes the host's RPC queue
 * (refused if another agent holds it), then syncs the host's inventory once. The other start-up recovery `buildComputeApp` does for `serve` stays with the
 * API processes, which own that state: ServerLifecycle.recover (builds and deletes are driven by
 * the API, the deletes' detaches go through the volume service with the API's tokens),
 * ComputeAPI.clearStaleTasks (task states ComputeAPI sets around an attach or detach it runs) and
 * ComputeAPI.resumeExternalEvents (volume-extended actions ComputeAPI accepted). An agent that
 * restarts interrupts none of them: their RPC call fails uncertain and the API side ends or
 * retries it; clearing them from an agent would cut under an API process still running them.
 */
import { mkdirSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { ConfigError } from './config.js';
import { createDriver, createLogger } from './app.js';
import { openStoreUrl, type OpenedStore } from './db/open.js';
import { ComputeManager } from './compute/manager.js';
import { AmqpConnection } from './rpc/amqp/connection.js';
import { ComputeRpcServer } from './rpc/amqp/server.js';
import type { VirtDriver } from './virt/driver.js';

/** Nova's binary and topic names of a compute service row. */
export const COMPUTE_BINARY = 'nova-compute';
/** See COMPUTE_BINARY. */
export const COMPUTE_TOPIC = 'compute';

/** What a test (or a process running several agents) may give instead of what `config` names. */
export interface ComputeAgentDeps {
  logger?: Logger;
  /** The host's driver (default: `createDriver(config)`); the agent closes it. */
  driver?: VirtDriver;
}

/** A running compute agent. */
export interface RunningComputeAgent {
  host: string;
  manager: ComputeManager;
  server: ComputeRpcServer;
  connection: AmqpConnection;
  /** The heartbeats written, and those that failed (the database away), since start. */
  heartbeats: { written: number; failed: number };
  /** Stops the loops, lets calls under way reply (up to shutdownGraceMs), then closes the broker connection, driver and store. */
  close(): Promise<void>;
}

/**
 * Starts the agent of `config.computeHost` (see the module comment): opens the store at
 * `config.databaseUrl`, the driver, the ComputeManager, the RPC server on
 * `config.transportUrl` (resolves once it consumes: it waits while the broker is away), one inventory sync, a sync
 * loop every `syncIntervalMs` (0: none) and a heartbeat every `serviceHeartbeatMs` (failures are
 * logged and the loop goes on: the database may be briefly away).
 *
 * Throws ConfigError without databaseUrl or transportUrl, HostTakenError (rpc/amqp/server.ts)
 * when another agent serves the host, and what opening the store or the driver throws.
 */
export async function startComputeAgent(config: Config, deps: ComputeAgentDeps = {}): Promise<RunningComputeAgent> {
  if (!config.databaseUrl) throw new ConfigError('databaseUrl', 'config databaseUrl: compute-agent needs the shared database (--database-url postgresql://…)');
  if (!config.transportUrl) throw new ConfigError('transportUrl', 'config transportUrl: compute-agent needs the message broker (--transport-url rabbit://USER:PASSWORD@HOST:PORT/VHOST)');
  const host = config.computeHost;
  const logger = (deps.logger ?? createLogger(config.logLevel)).child({ host });
  const opened: OpenedStore = await openStoreUrl(config.databaseUrl);
  let driver: VirtDriver | undefined;
  let connection: AmqpConnection | undefined;
  let server: ComputeRpcServer | undefined;
  const timers: NodeJS.Timeout[] = [];
  try {
    // The host's own state (the libvirt driver's instances, the fake's hypervisor file) lives here.
    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
    driver = deps.driver ?? (await createDriver(config, logger));
    const manager = new ComputeManager({ host, driver, store: opened.store, defaultProjectId: config.defaultProject, logger: logger.child({ component: 'compute-manager' }) });
    const heartbeats = { written: 0, failed: 0 };
    let heartbeatFailing = false;
    const beat = async () => {
      try {
        await opened.store.serviceHeartbeat(host, COMPUTE_BINARY, COMPUTE_TOPIC);
        heartbeats.written++;
        if (heartbeatFailing) logger.info({}, 'service heartbeat written again');
        heartbeatFailing = false;
      } catch (err) {
        heartbeats.failed++;
        // Once per outage at warn, then debug: a database away for minutes must not flood the log.
        logger[heartbeatFailing ? 'debug' : 'warn']({ err }, 'could not write the service heartbeat; will retry');
        heartbeatFailing = true;
      }
    };
    // The host's queue first (exclusive: HostTakenError if another agent serves the host), then
    // the host's inventory: an agent started by mistake for a host that already has one must be
    // refused before it writes its own inventory over that host's. Calls that come before the
    // first sync ends are answered from the driver, which the manager asks directly.
    connection = await AmqpConnection.open(config.transportUrl, { logger, name: `online-extend compute-agent ${host}` });
    server = new ComputeRpcServer({ connection, manager, logger });
    await server.start();
    await manager.syncInventory().catch((err: unknown) => logger.warn({ err }, 'initial inventory sync failed; the sync loop retries'));
    await beat();
    const heartbeat = setInterval(() => void beat(), config.serviceHeartbeatMs);
    heartbeat.unref();
    timers.push(heartbeat);
    if (config.syncIntervalMs > 0) {
      const sync = setInterval(() => void manager.syncInventory().catch((err: unknown) => logger.warn({ err }, 'inventory sync failed')), config.syncIntervalMs);
      sync.unref();
      timers.push(sync);
    }
    logger.info({ broker: connection.broker, driver: driver.name }, 'compute agent started');
    const conn = connection;
    const srv = server;
    const drv = driver;
    let closing: Promise<void> | undefined;
    return {
      host,
      manager,
      server: srv,
      connection: conn,
      heartbeats,
      close: () =>
        (closing ??= (async () => {
          for (const t of timers) clearInterval(t);
          await srv.close(config.shutdownGraceMs);
          await conn.close();
          await drv.close().catch((err: unknown) => logger.warn({ err }, 'driver close failed'));
          await opened.close();
          logger.info({}, 'compute agent stopped');
        })()),
    };
  } catch (err) {
    for (const t of timers) clearInterval(t);
    await server?.close(0).catch(() => undefined);
    await connection?.close().catch(() => undefined);
    await driver?.close().catch(() => undefined);
    await opened.close().catch(() => undefined);
    throw err;
  }
}
