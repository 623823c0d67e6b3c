/**
 * The real `online-extend` command (bin/, built) refuses a bad setting before doing anything:
 * exit status 2 and a message naming the key, whichever source gave it; `--config FILE` is read,
 * under flags and the environment. Temp dirs removed.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const BIN = resolve(import.meta.dirname, '../../bin/online-extend.js');

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'oe-cli-config-'));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

/** Run the CLI to completion with `env` added: its exit status and stderr. */
function cli(args: string[], env: Record<string, string> = {}): { status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, ONLINE_EXTEND_LOG_LEVEL: 'warn', ...env }, timeout: 30_000 });
  return { status: r.status, stderr: r.stderr.trim() };
}

describe('a refused setting', () => {
  const cases: Array<[name: string, args: () => string[], env: Record<string, string>, message: RegExp]> = [
    ['serve with a port that is not a number (flag)', () => ['serve', '--data-dir', join(root, 'data'), '--port', 'abc'], {}, /^error: config port: expected an integer from 0 to 65535, got "abc" \(from flag --port\)$/],
    ['serve with an unknown driver (environment)', () => ['serve', '--data-dir', join(root, 'data')], { ONLINE_EXTEND_DRIVER: 'xen' }, /^error: config driver: expected one of fake, libvirt, got "xen" \(from env ONLINE_EXTEND_DRIVER\)$/],
    ['serve with an unknown key in its config file', () => ['serve', '--data-dir', join(root, 'data'), '--config', join(root, 'bad.json')], {}, /^error: config prot: not a setting \(in the config file/],
    ['token create with an unknown log level (environment)', () => ['token', 'create', '--project', 'p', '--user', 'u', '--roles', 'member', '--data-dir', join(root, 'data')], { ONLINE_EXTEND_LOG_LEVEL: 'loud' }, /^error: config logLevel: expected one of .*got "loud"/],
    ['a client command with a URL that is not http(s)', () => ['servers', '--token', 't', '--project', 'p'], { ONLINE_EXTEND_URL: 'ftp://x' }, /^error: config url: expected an http:\/\/ or https:\/\/ URL, got "ftp:\/\/x" \(from env ONLINE_EXTEND_URL\)$/],
    ['a volume command with an empty token', () => ['volume', 'list', '--token', '', '--project', 'p'], {}, /^error: config token: expected a non-empty string, got "" \(from flag --token\)$/],
    ['serve with --metrics-host but no --metrics-port (it would be ignored)', () => ['serve', '--data-dir', join(root, 'data'), '--metrics-host', '127.0.0.2'], {}, /^error: config metricsHost: given \(from flag --metrics-host\) without metricsPort, .*--metrics-port/],
    ['api with ONLINE_EXTEND_METRICS_HOST but no metrics port', () => ['api', '--data-dir', join(root, 'data'), '--database-url', 'sqlite:///' + join(root, 'data', 'db.sqlite')], { ONLINE_EXTEND_METRICS_HOST: '127.0.0.2' }, /^error: config metricsHost: given \(from env ONLINE_EXTEND_METRICS_HOST\) without metricsPort/],
    ['the demo with an unknown backend', () => ['demo', '--backends', 'file,nfs', '--no-install'], {}, /^error: config backends: expected a comma-separated list of file, block, iscsi, got \["file","nfs"\]/],
  ];
  for (const [name, args, env, message] of cases) {
    it(`ends ${name} with status 2 and a message naming the key, having made nothing`, () => {
      writeFileSync(join(root, 'bad.json'), JSON.stringify({ prot: 1 }));
      const r = cli(args(), env);
      expect(r.stderr).toMatch(message);
      expect(r.status).toBe(2);
      expect(existsSync(join(root, 'data'))).toBe(false);
    });
  }
});

describe('--config FILE', () => {
  it('is read by token create, under its flags: the data dir comes from the file unless --data-dir is given', () => {
    writeFileSync(join(root, 'oe.json'), JSON.stringify({ dataDir: join(root, 'from-file') }));
    const args = ['token', 'create', '--project', 'p', '--user', 'u', '--roles', 'member', '--config', join(root, 'oe.json')];
    expect(cli(args).status).toBe(0);
    expect(existsSync(join(root, 'from-file', 'online-extend.sqlite'))).toBe(true);
    expect(cli([...args, '--data-dir', join(root, 'from-flag')]).status).toBe(0);
    expect(existsSync(join(root, 'from-flag', 'online-extend.sqlite'))).toBe(true);
  });
});
