/** The `online-extend` command: argv → commands. Logic lives in the modules it calls. */
import { Command, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { ConfigSchema, ConfigError, loadClientConfig, loadConfig, loadSettings, processEnv, type ClientConfig, type Config, type Flags } from './config.js';
import { createLogger, openComputeRpc, startApiService, startService } from './app.js';
import { issueToken, parseDuration, parseRoles, rolesInPolicy, STANDARD_ROLES } from './auth/tokens.js';
import { commandDatabaseName, DATABASE_URL_HELP, openCommandStore, openingChanges } from './cli/store.js';
import { ApiError } from './rpc/httpClient.js';
import { render, type Format } from './cli/output.js';
import { formatBytes, parseSize } from './cli/sizes.js';
import { registerConfigCommand } from './cli/settings.js';
import { registerVolumeCommands } from './cli/volume.js';
import { apiClient, listAll, projectOf } from './cli/client.js';
import { Type } from '@sinclair/typebox';
import { registerLabCommands } from './cli/lab.js';
import { registerUserCommands } from './cli/users.js';
import { registerCatalogCommands } from './cli/catalog.js';
import { revokeStoredToken, tokenArgument, TokenOperandCommand } from './cli/tokens.js';

type Out = (s: string) => void;

/** The `--transport-url` option's help. */
const TRANSPORT_URL_HELP = 'the message broker of compute RPC: rabbit://USER:PASSWORD@HOST:PORT/VHOST (env ONLINE_EXTEND_TRANSPORT_URL)';

function readPolicyRules(path: string): Record<string, unknown> {
  const parsed = JSON.parse(readFileSync(path, 'utf8')) as unknown;
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error(`policy file ${path}: expected a JSON object of "name": "rule"`);
  return parsed as Record<string, unknown>;
}

/** The client settings of a command: its flags over the environment (config.ts). */
function clientConfig(o: { url?: string; token?: string; project?: string }, env: NodeJS.ProcessEnv): ClientConfig {
  return loadClientConfig(env, { url: o.url, token: o.token, project: o.project });
}

function clientOptions(cmd: Command): Command {
  return cmd
    .option('--url <url>', 'compute API URL (env ONLINE_EXTEND_URL)')
    .option('--token <token>', 'auth token (env ONLINE_EXTEND_TOKEN)')
    .option('--project <id>', 'tenant/project id in the URL (env ONLINE_EXTEND_PROJECT)')
    .addOption(new Option('-f, --format <format>', 'output format').choices(['table', 'json']).default('table'));
}

interface ClientOpts {
  url?: string;
  token?: string;
  project?: string;
  format: Format;
  server: string;
  volume: string;
}

/**
 * The flags of the processes that serve the APIs (`serve` and `api`): listen addresses and
 * ports, the data dir, the volume backends, HTTP limits and auth. Driver flags are serve's own.
 */
function frontEndOptions(cmd: Command): Command {
  return cmd
    .option('--host <addr>', 'listen address', undefined)
    .option('--port <port>', 'listen port (default 8774)')
    .option('--data-dir <dir>', 'state directory (default ./data)')
    .option('--config <file>', 'settings from a JSON file (keys as in src/config.ts; flags and env win)')
    .option('--policy <file>', 'policy overrides (JSON, oslo.policy rules)')
    .option('--volume-port <port>', 'volume API port (default 8776)')
    .option('--metrics-port <port>', "serve GET /metrics on its own port (0 = any free one) instead of the compute API's")
    .option('--metrics-host <addr>', 'listen address of --metrics-port (default 127.0.0.1; refused without --metrics-port)')
    .option('--server-timing-detail', 'Server-Timing with the time per layer (store, lock, driver, rpc, libvirt) besides auth and total (the default; costs CPU per request)')
    .option('--no-server-timing-detail', 'Server-Timing with auth and total only (saves CPU per request)')
    .option('--image-port <port>', 'image API port (default 9292; 0 = any free one)')
    .option('--no-volume-api', 'run only the compute API')
    .option('--backends <list>', 'volume backends: file,block,iscsi (default file)')
    .option('--iscsi-portal <addr>', 'tgtd portal for the iscsi backend (default 127.0.0.1:3260)')
    .option('--tgt-control-port <n>', "tgtadm's control port for the iscsi backend")
    .option('--extend-timeout <ms>', 'longest an in-use extend may take')
    .option('--extend-step-delay <ms>', 'sleep before each extend step (crash-recovery tests only)')
    .option('--http-headers-timeout <ms>', 'request line and headers must arrive within this; also the longest a new connection may stay silent (default 10000)')
    .option('--http-request-timeout <ms>', 'the whole request, body included, must arrive within this (default 30000)')
    .option('--http-keep-alive-timeout <ms>', 'close a keep-alive connection idle this long (default 5000)')
    .option('--http-max-connections <n>', 'open connections per API (default: from the open-files limit)')
    .option('--http-send-timeout <ms>', 'cut a connection whose client takes none of its answers for this long (default 10000)')
    .option('--shutdown-grace <ms>', 'on SIGTERM/SIGINT, let requests being served finish this long, then exit (default 10000)')
    .addOption(new Option('--auth <mode>', 'token (default: own tokens and the embedded Keystone), keystone (a real Keystone), noauth (labs only)').choices(['token', 'keystone', 'noauth']))
    .option('--keystone-url <url>', "with --auth keystone: the Keystone to validate tokens with (its /v3 URL)")
    .option('--keystone-service-user <name>', 'with --auth keystone: the service user (default online-extend; needs the service and admin roles)')
    .option('--keystone-service-project <name>', "with --auth keystone: the service user's project (default service)")
    .option('--keystone-service-password-file <file>', "with --auth keystone: file holding the service user's password (read once at start)")
    .option('--keystone-token-cache <ms>', 'with --auth keystone: how long a validation, valid or not, is trusted (default 5000)')
    .option('--identity-port <port>', 'embedded Keystone v3 port (default 5000; auth token only)')
    .option('--identity-token-ttl <ms>', 'lifetime of tokens the embedded Keystone issues (default 3600000)');
}

/** frontEndOptions' values as config keys. */
function frontEndFlags(o: Record<string, string | boolean | undefined>): Flags<Config> {
  return {
    host: o.host,
    port: o.port,
    dataDir: o.dataDir,
    policyFile: o.policy,
    volumePort: o.volumePort,
    metricsPort: o.metricsPort,
    metricsHost: o.metricsHost,
    serverTimingDetail: o.serverTimingDetail,
    imagePort: o.imagePort,
    volumeApi: o.volumeApi,
    backends: o.backends,
    iscsiPortal: o.iscsiPortal,
    tgtControlPort: o.tgtControlPort,
    extendTimeoutMs: o.extendTimeout,
    extendStepDelayMs: o.extendStepDelay,
    httpHeadersTimeoutMs: o.httpHeadersTimeout,
    httpRequestTimeoutMs: o.httpRequestTimeout,
    httpKeepAliveTimeoutMs: o.httpKeepAliveTimeout,
    httpMaxConnections: o.httpMaxConnections,
    httpSendTimeoutMs: o.httpSendTimeout,
    shutdownGraceMs: o.shutdownGrace,
    auth: o.auth,
    keystoneUrl: o.keystoneUrl,
    keystoneServiceUser: o.keystoneServiceUser,
    keystoneServiceProject: o.keystoneServiceProject,
    keystoneServicePasswordFile: o.keystoneServicePasswordFile,
    keystoneTokenCacheMs: o.keystoneTokenCache,
    identityPort: o.identityPort,
    identityTokenTtlMs: o.identityTokenTtl,
  };
}

/**
 * Runs `service` until SIGTERM/SIGINT, then closes it within the grace (a second signal, or a
 * close that hangs past the grace plus 5 s, ends the process at once).
 */
function closeOnSignal(out: Out, graceMs: number, service: { close(): Promise<void> }): void {
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) process.exit(1);
    stopping = true;
    out(`${signal}: shutting down (grace ${graceMs} ms)`);
    setTimeout(() => process.exit(1), graceMs + 5_000).unref();
    void service.close().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`shutdown failed: ${(err as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

/**
 * The `online-extend` program: `serve`, `api`, `compute-agent`, `token create|revoke`, the compute client commands, `demo`,
 * `volume …` and `lab …`. Output goes to `out`; every setting comes from config.ts (`env` is the
 * environment it reads).
 */
export function buildProgram(out: Out, env: NodeJS.ProcessEnv): Command {
  const program = new Command('online-extend')
    .description('Grow volumes attached to running libvirt/QEMU guests, online, with nothing lost')
    .showHelpAfterError();

  frontEndOptions(
    program
      .command('serve')
      .description('run the compute API (os-online_extend_volume) on this hypervisor host')
      .addOption(new Option('--driver <driver>', 'virt driver').choices(['libvirt', 'fake']))
      .option('--fake-inventory <file>', 'servers for the fake driver (JSON)')
      .option('--libvirt-uri <uri>', 'libvirt URI (default qemu:///system)')
      .option('--default-project <id>', 'project for domains whose metadata names none')
      .option('--sync-interval <ms>', 're-read the hypervisor inventory this often')
      .option('--fake-latency <ms>', 'delay every fake-driver call (tests of slow requests only)')
      .option('--allow-orphan-volumes', 'start even though volume files belong to no volume in the database (logged, left alone)'),
  ).action(async (o: Record<string, string | boolean | undefined>) => {
      const config = loadConfig(env, {
        ...frontEndFlags(o),
        driver: o.driver ?? (o.fakeInventory ? 'fake' : undefined),
        fakeInventory: o.fakeInventory,
        libvirtUri: o.libvirtUri,
        defaultProject: o.defaultProject,
        syncIntervalMs: o.syncInterval,
        fakeLatencyMs: o.fakeLatency,
        allowOrphanVolumes: o.allowOrphanVolumes,
      }, typeof o.config === 'string' ? o.config : undefined);
      // serve keeps its database in its data dir: a shared database URL (from the environment or
      // a config file meant for `api`) is not used, and saying so beats ignoring it silently.
      if (config.databaseUrl) process.stderr.write(`note: serve keeps its database in its data dir (${config.dataDir}); the database URL given (ONLINE_EXTEND_DATABASE_URL or databaseUrl) is for \`api\` and \`compute-agent\`, and is not used\n`);
      // Everything this process creates (the database, its WAL, qemu-img's images, …) is private
      // to the service's user; startService also sets modes explicitly and fixes older files.
      process.umask(0o077);
      const service = await startService(config);
      // Handlers before the "listening" lines: whoever reads them may signal us at once.
      closeOnSignal(out, config.shutdownGraceMs, service);
      out(`compute API listening on ${service.computeUrl} (driver ${config.driver}, data ${config.dataDir})`);
      if (service.volumeUrl) out(`volume API listening on ${service.volumeUrl} (backends ${config.backends.join(', ')})`);
      if (service.identityUrl) out(`identity (Keystone v3) listening on ${service.identityUrl}/v3`);
      out(`image API listening on ${service.imageUrl}`);
      process.on('SIGHUP', () => void service.syncInventory().catch((err: unknown) => process.stderr.write(`inventory sync failed: ${(err as Error).message}\n`)));
    });

  frontEndOptions(
    program
      .command('api')
      .description('run the compute, volume, identity and image APIs of a deployment (stateless: any number, on one --database-url; compute hosts over --transport-url)')
      .option('--database-url <url>', DATABASE_URL_HELP)
      .option('--transport-url <url>', TRANSPORT_URL_HELP)
      .option('--rpc-timeout <ms>', 'deadline of one compute RPC call (default 60000)')
      .option('--service-down-time <ms>', 'a compute host whose heartbeat is older than this is down: calls to it fail at once (default 30000)'),
  ).action(async (o: Record<string, string | boolean | undefined>) => {
    const config = loadConfig(env, { ...frontEndFlags(o), databaseUrl: o.databaseUrl, transportUrl: o.transportUrl, rpcTimeoutMs: o.rpcTimeout, serviceDownTimeMs: o.serviceDownTime }, typeof o.config === 'string' ? o.config : undefined);
    if (!config.databaseUrl) throw new ConfigError('databaseUrl', 'config databaseUrl: api keeps its state in the shared database: give --database-url postgresql://… (env ONLINE_EXTEND_DATABASE_URL)');
    process.umask(0o077);
    const logger = createLogger(config.logLevel);
    const rpc = await openComputeRpc(config, logger);
    let service: Awaited<ReturnType<typeof startApiService>>;
    try {
      service = await startApiService(config, { rpc: rpc.rpc, logger });
    } catch (err) {
      await rpc.close().catch(() => undefined);
      throw err;
    }
    const running = service;
    closeOnSignal(out, config.shutdownGraceMs, { close: async () => { await running.close(); await rpc.close(); } });
    out(`compute API listening on ${service.computeUrl} (api role, instance ${service.instanceId})`);
    if (service.volumeUrl) out(`volume API listening on ${service.volumeUrl} (backends ${config.backends.join(', ')})`);
    if (service.identityUrl) out(`identity (Keystone v3) listening on ${service.identityUrl}/v3`);
    out(`image API listening on ${service.imageUrl}`);
  });

  program
    .command('compute-agent')
    .description("run one hypervisor host's compute agent (Nova's nova-compute): its driver, rescans and inventory, serving compute RPC on the broker")
    .requiredOption('--host <name>', "this compute host's name (Nova's host; the RPC topic is compute.<name>)")
    .option('--data-dir <dir>', 'state directory of this host (default ./data)')
    .option('--config <file>', 'settings from a JSON file (keys as in src/config.ts; flags and env win)')
    .option('--database-url <url>', DATABASE_URL_HELP)
    .option('--transport-url <url>', TRANSPORT_URL_HELP)
    .addOption(new Option('--driver <driver>', 'virt driver').choices(['libvirt', 'fake']))
    .option('--fake-inventory <file>', 'servers for the fake driver (JSON)')
    .option('--fake-latency <ms>', 'delay every fake-driver call (tests of slow requests only)')
    .option('--libvirt-uri <uri>', 'libvirt URI (default qemu:///system)')
    .option('--default-project <id>', 'project for domains whose metadata names none')
    .option('--iscsi-portal <addr>', 'tgtd portal whose LUN sizes the fake driver reads (default 127.0.0.1:3260)')
    .option('--sync-interval <ms>', 're-read the hypervisor inventory this often')
    .option('--heartbeat-interval <ms>', "write this host's service heartbeat this often (default 5000)")
    .action(async (o: Record<string, string | undefined>) => {
      const config = loadConfig(env, {
        computeHost: o.host,
        dataDir: o.dataDir,
        databaseUrl: o.databaseUrl,
        transportUrl: o.transportUrl,
        driver: o.driver ?? (o.fakeInventory ? 'fake' : undefined),
        fakeInventory: o.fakeInventory,
        fakeLatencyMs: o.fakeLatency,
        libvirtUri: o.libvirtUri,
        defaultProject: o.defaultProject,
        iscsiPortal: o.iscsiPortal,
        syncIntervalMs: o.syncInterval,
        serviceHeartbeatMs: o.heartbeatInterval,
      }, o.config);
      if (!config.databaseUrl) throw new ConfigError('databaseUrl', 'config databaseUrl: compute-agent records its inventory in the shared database: give --database-url postgresql://… (env ONLINE_EXTEND_DATABASE_URL)');
      if (!config.transportUrl) throw new ConfigError('transportUrl', 'config transportUrl: compute-agent serves compute RPC on the broker: give --transport-url rabbit://USER:PASSWORD@HOST:PORT/VHOST (env ONLINE_EXTEND_TRANSPORT_URL)');
      process.umask(0o077);
      // Loaded when run: the agent brings the driver and the broker client with it.
      const { startComputeAgent } = await import('./agent.js');
      const agent = await startComputeAgent(config);
      closeOnSignal(out, config.shutdownGraceMs, agent);
      out(`compute agent of host ${config.computeHost} running (driver ${config.driver}, topic compute.${config.computeHost})`);
    });

  const token = program.command('token').description('manage API tokens');
  token
    .command('create')
    .description('issue a token (printed once; stored hashed)')
    .requiredOption('--project <id>', 'project id')
    .requiredOption('--user <id>', 'user id')
    .option('--roles <roles>', `comma-separated roles, required: ${STANDARD_ROLES.join(', ')} or those a policy file names`)
    .option('--ttl <duration>', 'lifetime, e.g. 30m, 1h, 7d', '1h')
    .option('--data-dir <dir>', 'state directory (default ./data)')
    .option('--database-url <url>', DATABASE_URL_HELP)
    .option('--policy <file>', 'policy overrides whose roles may be given too (env ONLINE_EXTEND_POLICY_FILE)')
    .option('--config <file>', 'settings from a JSON file (keys as in src/config.ts; flags and env win)')
    .action(async (o: { project: string; user: string; roles?: string; ttl: string; dataDir?: string; databaseUrl?: string; policy?: string; config?: string }) => {
      // No default: a token's power is chosen, never inherited (it used to be admin).
      if (o.roles === undefined) {
        throw new Error(`--roles is required: name the token's roles, e.g. --roles member (standard roles: ${STANDARD_ROLES.join(', ')}; admin may do everything)`);
      }
      const config = loadConfig(env, { dataDir: o.dataDir, databaseUrl: o.databaseUrl, driver: 'libvirt', policyFile: o.policy }, o.config);
      const roles = parseRoles(o.roles, config.policyFile ? rolesInPolicy(readPolicyRules(config.policyFile)) : []);
      const ttlMs = parseDuration(o.ttl);
      // The shared database --database-url names, or the data dir's with the same checks as
      // serve (a damaged or missing database is refused) without serve's lock: tokens may be
      // created while serve runs.
      const db = await openCommandStore(config);
      try {
        const { token: t } = await issueToken(db.store, { projectId: o.project, userId: o.user, roles, ttlMs });
        out(t);
      } finally {
        await db.close();
      }
    });
  // Not token.command(): its arguments go through tokenOperandsLast (a token may start with "-").
  const revoke = new TokenOperandCommand('revoke');
  revoke.copyInheritedSettings(token);
  token.addCommand(revoke);
  revoke
    .description("revoke one token (that token only: tokens made from it keep working, as Keystone's DELETE /v3/auth/tokens); a running serve stops accepting it within 2 s")
    .argument('<token>', 'the token to revoke (it may start with -), or - to read it from standard input (then it is not in the command line)')
    .option('--data-dir <dir>', 'state directory (default ./data)')
    .option('--database-url <url>', DATABASE_URL_HELP)
    .option('--config <file>', 'settings from a JSON file (keys as in src/config.ts; flags and env win)')
    .addOption(new Option('-f, --format <format>', 'output format').choices(['table', 'json']).default('table'))
    .action(async (arg: string, o: { dataDir?: string; databaseUrl?: string; config?: string; format: Format }) => {
      const value = await tokenArgument(arg, process.stdin);
      const config = loadConfig(env, { dataDir: o.dataDir, databaseUrl: o.databaseUrl, driver: 'libvirt' }, o.config);
      // The store `token create` writes to, opened the same way (works while serve runs); a
      // missing one is refused: revoking in a fresh database would answer "unknown" for a token
      // that still works on the real one.
      const db = await openCommandStore(config, { existing: 'whose token to revoke' });
      try {
        const changed = openingChanges(db);
        const r = await revokeStoredToken(db, value, new Date(), commandDatabaseName(config), changed);
        // Keystone's token view names the user by id and name (token.user.id, token.user.name).
        const row = { user_id: r.userId, user_name: r.userName, project_id: r.projectId, expires_at: r.expiresAt, revoked: true };
        if (changed !== undefined) process.stderr.write(`note: opening ${commandDatabaseName(config)}: ${changed}\n`);
        if (r.userGone) process.stderr.write(`note: the token's user ${r.userId} no longer exists (deleted since the token was issued); the token is revoked all the same\n`);
        out(render(o.format, { token: row }, [row]));
      } finally {
        await db.close();
      }
    });

  const base = (c: ClientConfig) => `/v2/${projectOf(c)}/servers`;

  clientOptions(program.command('rescan').description('make the compute host see the volume’s new size'))
    .requiredOption('--server <id>', 'server id')
    .requiredOption('--volume <id>', 'volume id')
    .action(async (o: ClientOpts) => {
      const settings = clientConfig(o, env);
      const c = apiClient(settings, 'compute');
      const res = await c.request('PUT', `${base(settings)}/${o.server}/os-online_extend_volume`, { onlineExtendVolume: { volume_id: o.volume } });
      out(render(o.format, { status: res.status, request_id: res.requestId }, [{ status: res.status, request_id: res.requestId }]));
    });

  clientOptions(program.command('blockdev').description('the size the compute host sees for a volume (get_blockdev)'))
    .requiredOption('--server <id>', 'server id')
    .requiredOption('--volume <id>', 'volume id')
    .action(async (o: ClientOpts) => {
      const settings = clientConfig(o, env);
      const c = apiClient(settings, 'compute');
      const res = await c.request<{ volume_blockdev: { id: string; bytes: number } }>('GET', `${base(settings)}/${o.server}/os-online_extend_volume/${o.volume}`);
      const b = res.body.volume_blockdev;
      out(render(o.format, res.body, [{ id: b.id, bytes: b.bytes, size: formatBytes(b.bytes) }]));
    });

  clientOptions(program.command('assist-extend').description('grow the guest’s view of an attached volume (assist_extend)'))
    .requiredOption('--server <id>', 'server id')
    .requiredOption('--volume <id>', 'volume id')
    .requiredOption('--size <size>', 'new size, e.g. 2GiB or bytes')
    .action(async (o: ClientOpts & { size: string }) => {
      const settings = clientConfig(o, env);
      const c = apiClient(settings, 'compute');
      const res = await c.request<{ volume_blockdev: { id: string; bytes: number } }>(
        'POST',
        `${base(settings)}/${o.server}/os-online_extend_volume/${o.volume}`,
        { onlineExtendVolume: { bytes: parseSize(o.size) } },
      );
      const b = res.body.volume_blockdev;
      out(render(o.format, res.body, [{ id: b.id, guest_bytes: b.bytes, size: formatBytes(b.bytes), request_id: res.requestId }]));
    });

  clientOptions(program.command('servers').description('list servers and their attached volumes'))
    .action(async (o: Omit<ClientOpts, 'server' | 'volume'>) => {
      const settings = clientConfig(o, env);
      const c = apiClient(settings, 'compute');
      const servers = await listAll<Record<string, unknown>>(c, `${base(settings)}/detail`, 'servers');
      const res = { body: { servers } };
      out(
        render(
          o.format,
          res.body,
          res.body.servers.map((s) => ({
            id: s.id,
            name: s.name,
            status: s.status,
            host: s['OS-EXT-SRV-ATTR:host'],
            volumes: (s['os-extended-volumes:volumes_attached'] as Array<{ id: string }>).map((v) => v.id).join(','),
          })),
        ),
      );
    });

  program
    .command('demo')
    .description('set up the lab, boot a guest, extend attached volumes online and show what the guest sees')
    .option('--backends <list>', 'volume backends to show: file,block,iscsi', 'file,block,iscsi')
    .option('--keep-lab', 'leave the lab running afterwards')
    .option('--no-install', 'do not install missing Debian packages')
    .action(async (o: { backends: string; keepLab?: boolean; install: boolean }) => {
      const { runDemo } = await import('./demo.js');
      // Checked as the service's backends are (the same key of the same schema).
      const { backends } = loadSettings(Type.Pick(ConfigSchema, ['backends']), { flags: { backends: o.backends } });
      const ok = await runDemo({ backends, keepLab: o.keepLab ?? false, install: o.install, out });
      if (!ok) process.exitCode = 1;
    });

  registerVolumeCommands(program, out, env);
  registerUserCommands(program, out, env);
  registerCatalogCommands(program, out, env);
  registerConfigCommand(program, out);
  registerLabCommands(program, out, env);
  return program;
}

/**
 * Runs the command `argv` (process.argv's shape). Exit codes: 0 done, 2 a setting refused
 * (ConfigError, naming the key), 1 any other failure.
 */
export async function main(argv: string[], env: NodeJS.ProcessEnv = processEnv()): Promise<void> {
  const out: Out = (s) => process.stdout.write(`${s}\n`);
  const program = buildProgram(out, env);
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`error: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    if (err instanceof ApiError) {
      process.stderr.write(`error: HTTP ${err.status}: ${err.message}${err.requestId ? ` (${err.requestId})` : ''}\n`);
    } else {
      process.stderr.write(`error: ${(err as Error).message}\n`);
    }
    process.exitCode = 1;
  }
}
