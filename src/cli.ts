/** The `online-extend` command: argv → commands. Logic lives in the modules it calls. */
import { Command, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { ConfigSchema, ConfigError, loadClientConfig, loadConfig, loadSettings, processEnv, type ClientConfig } from './config.js';
import { startService } from './app.js';
import { issueToken, parseDuration, parseRoles, rolesInPolicy, STANDARD_ROLES } from './auth/tokens.js';
import { openDataDir } from './db/dataDir.js';
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

type Out = (s: string) => void;

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
 * The `online-extend` program: `serve`, `token create`, the compute client commands, `demo`,
 * `volume …` and `lab …`. Output goes to `out`; every setting comes from config.ts (`env` is the
 * environment it reads).
 */
export function buildProgram(out: Out, env: NodeJS.ProcessEnv): Command {
  const program = new Command('online-extend')
    .description('Grow volumes attached to running libvirt/QEMU guests, online, with nothing lost')
    .showHelpAfterError();

  program
    .command('serve')
    .description('run the compute API (os-online_extend_volume) on this hypervisor host')
    .option('--host <addr>', 'listen address', undefined)
    .option('--port <port>', 'listen port (default 8774)')
    .option('--data-dir <dir>', 'state directory (default ./data)')
    .option('--config <file>', 'settings from a JSON file (keys as in src/config.ts; flags and env win)')
    .addOption(new Option('--driver <driver>', 'virt driver').choices(['libvirt', 'fake']))
    .option('--fake-inventory <file>', 'servers for the fake driver (JSON)')
    .option('--libvirt-uri <uri>', 'libvirt URI (default qemu:///system)')
    .option('--default-project <id>', 'project for domains whose metadata names none')
    .option('--policy <file>', 'policy overrides (JSON, oslo.policy rules)')
    .option('--sync-interval <ms>', 're-read the hypervisor inventory this often')
    .option('--volume-port <port>', 'volume API port (default 8776)')
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
    .option('--fake-latency <ms>', 'delay every fake-driver call (tests of slow requests only)')
    .option('--allow-orphan-volumes', 'start even though volume files belong to no volume in the database (logged, left alone)')
    .addOption(new Option('--auth <mode>', 'token (default: own tokens and the embedded Keystone), keystone (a real Keystone), noauth (labs only)').choices(['token', 'keystone', 'noauth']))
    .option('--keystone-url <url>', "with --auth keystone: the Keystone to validate tokens with (its /v3 URL)")
    .option('--keystone-service-user <name>', 'with --auth keystone: the service user (default online-extend; needs the service and admin roles)')
    .option('--keystone-service-project <name>', "with --auth keystone: the service user's project (default service)")
    .option('--keystone-service-password-file <file>', "with --auth keystone: file holding the service user's password (read once at start)")
    .option('--keystone-token-cache <ms>', 'with --auth keystone: how long a validation, valid or not, is trusted (default 5000)')
    .option('--identity-port <port>', 'embedded Keystone v3 port (default 5000; auth token only)')
    .option('--identity-token-ttl <ms>', 'lifetime of tokens the embedded Keystone issues (default 3600000)')
    .action(async (o: Record<string, string | boolean | undefined>) => {
      const config = loadConfig(env, {
        host: o.host,
        port: o.port,
        dataDir: o.dataDir,
        driver: o.driver ?? (o.fakeInventory ? 'fake' : undefined),
        fakeInventory: o.fakeInventory,
        libvirtUri: o.libvirtUri,
        defaultProject: o.defaultProject,
        policyFile: o.policy,
        syncIntervalMs: o.syncInterval,
        volumePort: o.volumePort,
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
        fakeLatencyMs: o.fakeLatency,
        allowOrphanVolumes: o.allowOrphanVolumes,
        auth: o.auth,
        keystoneUrl: o.keystoneUrl,
        keystoneServiceUser: o.keystoneServiceUser,
        keystoneServiceProject: o.keystoneServiceProject,
        keystoneServicePasswordFile: o.keystoneServicePasswordFile,
        keystoneTokenCacheMs: o.keystoneTokenCache,
        identityPort: o.identityPort,
        identityTokenTtlMs: o.identityTokenTtl,
      }, typeof o.config === 'string' ? o.config : undefined);
      // Everything this process creates (the database, its WAL, qemu-img's images, …) is private
      // to the service's user; startService also sets modes explicitly and fixes older files.
      process.umask(0o077);
      const service = await startService(config);
      // Handlers before the "listening" lines: whoever reads them may signal us at once.
      // Bounded: close() drains within the grace; the timer is the backstop should anything
      // after the drain hang. A second signal ends the process at once.
      let stopping = false;
      const stop = (signal: NodeJS.Signals) => {
        if (stopping) process.exit(1);
        stopping = true;
        out(`${signal}: shutting down (grace ${config.shutdownGraceMs} ms)`);
        setTimeout(() => process.exit(1), config.shutdownGraceMs + 5_000).unref();
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
      out(`compute API listening on ${service.computeUrl} (driver ${config.driver}, data ${config.dataDir})`);
      if (service.volumeUrl) out(`volume API listening on ${service.volumeUrl} (backends ${config.backends.join(', ')})`);
      if (service.identityUrl) out(`identity (Keystone v3) listening on ${service.identityUrl}/v3`);
      out(`image API listening on ${service.imageUrl}`);
      process.on('SIGHUP', () => void service.syncInventory().catch((err: unknown) => process.stderr.write(`inventory sync failed: ${(err as Error).message}\n`)));
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
    .option('--policy <file>', 'policy overrides whose roles may be given too (env ONLINE_EXTEND_POLICY_FILE)')
    .option('--config <file>', 'settings from a JSON file (keys as in src/config.ts; flags and env win)')
    .action(async (o: { project: string; user: string; roles?: string; ttl: string; dataDir?: string; policy?: string; config?: string }) => {
      // No default: a token's power is chosen, never inherited (it used to be admin).
      if (o.roles === undefined) {
        throw new Error(`--roles is required: name the token's roles, e.g. --roles member (standard roles: ${STANDARD_ROLES.join(', ')}; admin may do everything)`);
      }
      const config = loadConfig(env, { dataDir: o.dataDir, driver: 'libvirt', policyFile: o.policy }, o.config);
      const roles = parseRoles(o.roles, config.policyFile ? rolesInPolicy(readPolicyRules(config.policyFile)) : []);
      const ttlMs = parseDuration(o.ttl);
      // The same checks as serve (a damaged or missing database is refused), without serve's lock:
      // tokens may be created while serve runs.
      const dataDir = openDataDir(config.dataDir, { lock: false });
      try {
        const { token: t } = await issueToken(dataDir.store, { projectId: o.project, userId: o.user, roles, ttlMs });
        out(t);
      } finally {
        await dataDir.close();
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
