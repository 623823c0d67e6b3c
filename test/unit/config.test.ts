/**
 * The one configuration loader (src/config.ts): every bad value is refused with a ConfigError
 * naming its key and where it came from; flags win over the environment, the environment over
 * the config file, the file over the defaults; the schema documents every key, and the CLI and
 * README name the same flags and environment variables.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { TSchema } from '@sinclair/typebox';
import { ClientConfigSchema, ConfigError, ConfigSchema, DEFAULTS, loadClientConfig, loadConfig, type Config } from '../../src/config.js';
import { buildProgram } from '../../src/cli.js';
import { httpLimitsFrom } from '../../src/app.js';
import { DEFAULT_HTTP_LIMITS } from '../../src/api/server.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'oe-config-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A config file holding `settings`; returns its path. */
function file(name: string, settings: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, typeof settings === 'string' ? settings : JSON.stringify(settings));
  return path;
}

/** The ConfigError `fn` throws (fails the test if it throws none, or another error). */
function refusal(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError, got none');
}

describe('bad values', () => {
  type Case = [name: string, load: () => unknown, key: string, message: RegExp];
  const cases: Case[] = [
    ['a port that is not a number, from the environment', () => loadConfig({ ONLINE_EXTEND_PORT: 'abc' }), 'port', /config port: expected an integer from 0 to 65535, got "abc" \(from env ONLINE_EXTEND_PORT\)/],
    ['a port past 65535, from a flag', () => loadConfig({}, { port: '70000' }), 'port', /config port: expected an integer from 0 to 65535, got 70000 \(from flag --port\)/],
    ['a negative volume port', () => loadConfig({ ONLINE_EXTEND_VOLUME_PORT: '-1' }), 'volumePort', /config volumePort: .*got "-1" \(from env ONLINE_EXTEND_VOLUME_PORT\)/],
    ['a fractional delay', () => loadConfig({}, { extendStepDelayMs: '1.5' }), 'extendStepDelayMs', /config extendStepDelayMs: expected a non-negative integer, got "1.5" \(from flag --extend-step-delay\)/],
    ['an extend timeout of 0 (every extend would fail at once)', () => loadConfig({}, { extendTimeoutMs: '0' }), 'extendTimeoutMs', /config extendTimeoutMs: expected an integer of at least 1, got 0 \(from flag --extend-timeout\)/],
    ['a watchdog period of 0 (a busy loop)', () => loadConfig({}, {}, file('watchdog.json', { extendWatchdogMs: 0 })), 'extendWatchdogMs', /config extendWatchdogMs: expected an integer of at least 1, got 0/],
    ['a reconcile period of 0', () => loadConfig({}, {}, file('reconcile.json', { volumeReconcileMs: 0 })), 'volumeReconcileMs', /config volumeReconcileMs: expected an integer of at least 1, got 0/],
    ['an empty backend list', () => loadConfig({}, { backends: '' }), 'backends', /config backends: .*got \[\] \(from flag --backends\)/],
    ['a header timeout of 0 (a connection could be held forever)', () => loadConfig({}, { httpHeadersTimeoutMs: '0' }), 'httpHeadersTimeoutMs', /config httpHeadersTimeoutMs: expected an integer of at least 1, got 0/],
    ['a send timeout of 0', () => loadConfig({}, { httpSendTimeoutMs: 0 }), 'httpSendTimeoutMs', /config httpSendTimeoutMs: expected an integer of at least 1/],
    ['an unknown driver', () => loadConfig({ ONLINE_EXTEND_DRIVER: 'xen' }), 'driver', /config driver: expected one of fake, libvirt, got "xen" \(from env ONLINE_EXTEND_DRIVER\)/],
    ['an unknown backend in the list', () => loadConfig({ ONLINE_EXTEND_BACKENDS: 'file, nfs' }), 'backends', /config backends: expected a comma-separated list of file, block, iscsi, got \["file","nfs"\]/],
    ['an unknown log level', () => loadConfig({ ONLINE_EXTEND_LOG_LEVEL: 'loud' }), 'logLevel', /config logLevel: expected one of fatal, error, warn, info, debug, trace, silent, got "loud"/],
    ['a boolean that is neither true nor false', () => loadConfig({}, { volumeApi: 'maybe' }), 'volumeApi', /config volumeApi: expected true or false, got "maybe" \(from flag --no-volume-api\)/],
    ['an empty data dir from a flag', () => loadConfig({}, { dataDir: '' }), 'dataDir', /config dataDir: expected a non-empty string, got "" \(from flag --data-dir\)/],
    ['a port of the wrong type in the config file', () => loadConfig({}, {}, file('port.json', { port: 'high' })), 'port', /config port: .*got "high" \(from config file .*port\.json\)/],
    ['an unknown key in the config file', () => loadConfig({}, {}, file('unknown.json', { prot: 8774 })), 'prot', /config prot: not a setting \(in the config file; known: host, port,/],
    ['allowOrphanVolumes in the config file (a flag only)', () => loadConfig({}, {}, file('orphans.json', { allowOrphanVolumes: true })), 'allowOrphanVolumes', /may only be given as the flag --allow-orphan-volumes/],
    ['a config file that is not JSON', () => loadConfig({}, {}, file('broken.json', '{ port: 1')), 'config', /config file .*broken\.json: /],
    ['a config file that is a list', () => loadConfig({}, {}, file('list.json', [1, 2])), 'config', /expected a JSON object of settings/],
    ['the fake driver without an inventory', () => loadConfig({}, { driver: 'fake' }), 'fakeInventory', /the fake driver needs --fake-inventory FILE/],
    ['a header timeout above the request timeout', () => loadConfig({}, { httpHeadersTimeoutMs: 40_000 }), 'httpHeadersTimeoutMs', /must not exceed httpRequestTimeoutMs/],
    ['a connection cap above the open-files limit', () => loadConfig({}, { httpMaxConnections: 2 ** 40 }), 'httpMaxConnections', /config httpMaxConnections: .* above the open-files limit/],
    ['a client URL that is not http(s)', () => loadClientConfig({ ONLINE_EXTEND_URL: 'ftp://host' }), 'url', /config url: expected an http:\/\/ or https:\/\/ URL, got "ftp:\/\/host" \(from env ONLINE_EXTEND_URL\)/],
    ['an empty token flag', () => loadClientConfig({}, { token: '' }), 'token', /config token: expected a non-empty string, got "" \(from flag --token\)/],
  ];
  for (const [name, load, key, message] of cases) {
    it(`refuses ${name}, naming the key ${key}`, () => {
      const err = refusal(load);
      expect(err.key).toBe(key);
      expect(err.message).toMatch(message);
    });
  }
});

describe('metricsHost without metricsPort', () => {
  // It only places metricsPort's listener: alone it would be ignored and /metrics would stay on
  // the compute API's address, whatever the operator meant.
  type Case = [source: string, load: () => unknown, from: RegExp];
  const cases: Case[] = [
    ['a flag', () => loadConfig({}, { metricsHost: '10.0.0.5' }), /from flag --metrics-host/],
    ['the environment', () => loadConfig({ ONLINE_EXTEND_METRICS_HOST: '10.0.0.5' }), /from env ONLINE_EXTEND_METRICS_HOST/],
    ['the config file', () => loadConfig({}, {}, file('metrics-host.json', { metricsHost: '10.0.0.5' })), /from config file .*metrics-host\.json/],
    ['a flag giving the default address itself', () => loadConfig({}, { metricsHost: '127.0.0.1' }), /from flag --metrics-host/],
  ];
  for (const [source, load, from] of cases) {
    it(`is refused from ${source}, naming both settings and the source`, () => {
      const err = refusal(load);
      expect(err.key).toBe('metricsHost');
      expect(err.message).toMatch(/^config metricsHost: /);
      expect(err.message).toMatch(from);
      expect(err.message).toMatch(/give metricsPort too \(--metrics-port, env ONLINE_EXTEND_METRICS_PORT\)/);
    });
  }

  it('is taken with metricsPort from any source, and left at its default without either', () => {
    expect(loadConfig({ ONLINE_EXTEND_METRICS_PORT: '9100' }, { metricsHost: '10.0.0.5' })).toMatchObject({ metricsHost: '10.0.0.5', metricsPort: 9100 });
    expect(loadConfig({ ONLINE_EXTEND_METRICS_HOST: '10.0.0.6' }, {}, file('metrics-port.json', { metricsPort: 0 }))).toMatchObject({ metricsHost: '10.0.0.6', metricsPort: 0 });
    const plain = loadConfig({ ONLINE_EXTEND_METRICS_HOST: '' });
    expect([plain.metricsHost, plain.metricsPort]).toEqual(['127.0.0.1', undefined]);
  });
});

describe('precedence: flag > env > file > default', () => {
  const path = () => file('precedence.json', { port: 1001, logLevel: 'debug', backends: ['block'] });
  type Case = [name: string, env: NodeJS.ProcessEnv, flags: Record<string, unknown>, withFile: boolean, port: number];
  const cases: Case[] = [
    ['the default when nothing sets it', {}, {}, false, 8774],
    ['the file over the default', {}, {}, true, 1001],
    ['the environment over the file', { ONLINE_EXTEND_PORT: '1002' }, {}, true, 1002],
    ['a flag over the environment and the file', { ONLINE_EXTEND_PORT: '1002' }, { port: '1003' }, true, 1003],
    ['a flag over the default', {}, { port: 1003 }, false, 1003],
    ['the file when the variable is empty (empty counts as unset)', { ONLINE_EXTEND_PORT: '' }, {}, true, 1001],
    ['the environment when the flag is not given (undefined)', { ONLINE_EXTEND_PORT: '1002' }, { port: undefined }, true, 1002],
  ];
  for (const [name, env, flags, withFile, port] of cases) {
    it(`takes ${name}`, () => {
      expect(loadConfig(env, flags as Partial<Record<keyof Config, unknown>>, withFile ? path() : undefined).port).toBe(port);
    });
  }

  it('keeps keys the higher sources leave unset from the lower ones', () => {
    const c = loadConfig({ ONLINE_EXTEND_LOG_LEVEL: 'warn' }, { port: '1003' }, path());
    expect([c.port, c.logLevel, c.backends, c.defaultBackend, c.volumePort]).toEqual([1003, 'warn', ['block'], 'block', 8776]);
  });

  it('reads the client settings from flags over the environment over the defaults', () => {
    const env = { ONLINE_EXTEND_URL: 'http://10.0.0.1:1', ONLINE_EXTEND_TOKEN: 'from-env', ONLINE_EXTEND_PROJECT: 'p-env' };
    expect(loadClientConfig(env, { token: 'from-flag' })).toEqual({ url: 'http://10.0.0.1:1', volumeUrl: 'http://127.0.0.1:8776', token: 'from-flag', project: 'p-env' });
    expect(loadClientConfig({})).toEqual({ url: 'http://127.0.0.1:8774', volumeUrl: 'http://127.0.0.1:8776' });
  });
});

describe('derived values', () => {
  it('makes the data dir absolute, falls back to the first enabled backend, and turns an automatic connection cap into a number', () => {
    const c = loadConfig({ ONLINE_EXTEND_BACKENDS: 'iscsi,block', ONLINE_EXTEND_DATA_DIR: 'rel/data' });
    expect(c.dataDir).toBe(resolve('rel/data'));
    expect(c.defaultBackend).toBe('iscsi');
    expect(c.httpMaxConnections).toBeGreaterThanOrEqual(16);
  });

  it('implies nothing from strings beyond their plain meaning: "false" turns the volume API off', () => {
    expect([loadConfig({}, { volumeApi: 'false' }).volumeApi, loadConfig({}, { volumeApi: false }).volumeApi, loadConfig({}).volumeApi]).toEqual([false, false, true]);
  });
});

describe('the schema as documentation', () => {
  const props = Object.entries(ConfigSchema.properties as Record<string, TSchema>);

  it('gives every service key a description and a default, unless it is optional', () => {
    for (const [key, s] of props) {
      expect(typeof s.description, key).toBe('string');
      if (!((ConfigSchema.required ?? []) as string[]).includes(key)) continue;
      expect(s.default, key).toBeDefined();
      expect((DEFAULTS as Record<string, unknown>)[key], key).toEqual(s.default);
    }
  });

  it("has the HTTP defaults an API server takes when its caller names none (DEFAULT_HTTP_LIMITS), so the two cannot drift", () => {
    const fromConfig = httpLimitsFrom(DEFAULTS);
    const { maxConnections, ...rest } = fromConfig;
    expect(rest).toEqual(DEFAULT_HTTP_LIMITS);
    expect(maxConnections).toBe(0); // automatic: derived from the open-files limit by the server
  });

  it('names only flags the commands it names have: serve when unqualified, else each command in parentheses (api, compute-agent, token create, user, …)', () => {
    const program = buildProgram(() => undefined, {});
    /** The long flags of a command path (`token create`), or of every subcommand of a group (`user`). */
    const flagsOf = (path: string): Array<Set<string | undefined>> => {
      let cmd = program;
      for (const part of path.split(' ')) cmd = cmd.commands.find((c) => c.name() === part)!;
      expect(cmd, path).toBeDefined();
      const leaves = cmd.commands.length > 0 ? cmd.commands : [cmd];
      return leaves.map((c) => new Set(c.options.map((o) => o.long)));
    };
    const named = props.flatMap(([key, s]) => (typeof s.flag === 'string' ? [[key, s.flag] as const] : []));
    expect(named.length).toBeGreaterThan(15);
    for (const [key, doc] of named) {
      const m = /^(--[a-z-]+)(?: \((.+)\))?$/.exec(doc);
      expect(m, `${key}: ${doc}`).not.toBeNull();
      const [, flag, where] = m!;
      for (const path of where ? where.split(', ') : ['serve']) {
        for (const flags of flagsOf(path)) expect(flags.has(flag), `${key}: ${flag} on ${path}`).toBe(true);
      }
    }
  });

  it('gives api every serve flag that is not about the driver or the host it runs on, and compute-agent the driver flags but no API ones', () => {
    const program = buildProgram(() => undefined, {});
    const longs = (name: string) => new Set(program.commands.find((c) => c.name() === name)!.options.map((o) => o.long!));
    const serve = longs('serve');
    const api = longs('api');
    const agent = longs('compute-agent');
    const driverOnly = ['--driver', '--fake-inventory', '--libvirt-uri', '--default-project', '--sync-interval', '--fake-latency', '--allow-orphan-volumes'];
    expect([...serve].filter((f) => !api.has(f)).sort()).toEqual([...driverOnly].sort());
    for (const f of ['--driver', '--fake-inventory', '--libvirt-uri', '--sync-interval', '--heartbeat-interval', '--database-url', '--transport-url', '--data-dir', '--config', '--host']) expect(agent.has(f), f).toBe(true);
    for (const f of ['--port', '--volume-port', '--identity-port', '--image-port', '--auth', '--backends']) expect(agent.has(f), f).toBe(false);
    for (const f of ['--database-url', '--transport-url']) expect(api.has(f), f).toBe(true);
  });

  it('knows every ONLINE_EXTEND_ variable the README names', () => {
    const readme = readFileSync(resolve(import.meta.dirname, '../../README.md'), 'utf8');
    const named = new Set(readme.match(/ONLINE_EXTEND_[A-Z_]+[A-Z]/g) ?? []);
    const known = new Set(
      [...props, ...Object.entries(ClientConfigSchema.properties as Record<string, TSchema>)].flatMap(([, s]) => (typeof s.env === 'string' ? [s.env] : [])),
    );
    // The lab's own settings (not the service's config) are documented in the lab's README.
    const lab = new Set(readFileSync(resolve(import.meta.dirname, '../../scripts/lab/README.md'), 'utf8').match(/ONLINE_EXTEND_[A-Z_]+[A-Z]/g) ?? []);
    expect(named.size).toBeGreaterThan(5);
    for (const env of named) expect(known.has(env) || lab.has(env), env).toBe(true);
  });
});

describe('online-extend config', () => {
  it('lists every key of both schemas with its env name, flag, unit and default, as JSON', async () => {
    const lines: string[] = [];
    await buildProgram((s) => lines.push(s), {}).parseAsync(['node', 'online-extend', 'config', '-f', 'json']);
    const { settings } = JSON.parse(lines.join('\n')) as { settings: Array<{ for: string; key: string; env: string | null; flag: string | null; unit: string | null; default: unknown }> };
    const keys = [...Object.keys(ConfigSchema.properties), ...Object.keys(ClientConfigSchema.properties)];
    expect(settings.map((s) => s.key)).toEqual(keys);
    expect(settings.find((s) => s.key === 'port')).toMatchObject({ for: 'service', env: 'ONLINE_EXTEND_PORT', flag: '--port', unit: 'TCP port', default: 8774 });
    expect(settings.find((s) => s.key === 'token')).toMatchObject({ for: 'client', env: 'ONLINE_EXTEND_TOKEN', flag: '--token', default: null });
  });
});

describe('URL settings that carry credentials', () => {
  it.each([
    ['databaseUrl', 'mysql://u:S3cretPW@h/db'],
    ['databaseUrl', 'POSTGRESQL://u:S3cretPW@h/db'],
    ['databaseUrl', 'postgresql:u:S3cretPW@h/db'],
    ['databaseUrl', 'mysql://u@h/db?password=S3cretPW'],
    ['transportUrl', 'amqp://oe:S3cretPW@h:5672/v'],
    ['transportUrl', 'amqps://oe:S3cretPW@h/v'],
  ])('refuses %s %s naming what it expects, without the password', (key, value) => {
    let err: unknown;
    try {
      loadConfig({}, { [key]: value });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).key).toBe(key);
    expect((err as Error).message).not.toContain('S3cretPW');
    expect((err as Error).message).toMatch(key === 'databaseUrl' ? /postgresql:\/\/, postgres:\/\/ or sqlite:\/\/\/ URL/ : /rabbit:\/\//);
  });
});
