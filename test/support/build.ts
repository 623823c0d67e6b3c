/** Tests that spawn `bin/online-extend.js` need dist/ to match src/: compile it when it does not. */
import { execFileSync, spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createRequire } from 'node:module';

const ROOT = resolve(import.meta.dirname, '../..');
export const BIN = join(ROOT, 'bin/online-extend.js');

function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

/** Runs `tsc -p tsconfig.build.json` (what `npm run build` does) if any file in src/ is newer than dist/cli.js. */
export function ensureBuilt(): void {
  let built = 0;
  try {
    built = statSync(join(ROOT, 'dist/cli.js')).mtimeMs;
  } catch {
    built = 0;
  }
  if (built >= newest(join(ROOT, 'src'))) return;
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.build.json')], { cwd: ROOT, stdio: 'inherit' });
}

/** What a CLI run printed (trimmed) and its exit status. */
export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `online-extend ARGS` (the built bin) to completion, asynchronously (a blocked event loop
 * would keep a test's HTTP client from seeing a service close idle connections): `stdin` written
 * to its standard input (then closed), `env` its environment (default: this process's), logs at
 * warn level.
 */
export async function runBin(args: string[], opts: { stdin?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliRun> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...(opts.env ?? process.env), ONLINE_EXTEND_LOG_LEVEL: 'warn' } });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const status = new Promise<number | null>((r) => child.once('close', r));
  child.stdin!.on('error', () => undefined);
  child.stdin!.end(opts.stdin ?? '');
  return { status: await status, stdout: stdout.trim(), stderr: stderr.trim() };
}

