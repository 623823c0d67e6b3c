/** Where the lab lives: the repository root, its scripts, the lab directory and the cache. */
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root: this file is src/lab/dirs.ts or dist/lab/dirs.js, two levels down. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The lab's shell scripts (guest build, guest init, libvirtd start). */
export const LAB_SCRIPTS = join(repoRoot, 'scripts', 'lab');

/** The default lab directory, `<repo>/.lab`. */
export const defaultLabDir = (): string => join(repoRoot, '.lab');

/** `$OE_LAB_CACHE`, else `$XDG_CACHE_HOME/online-extend`, else `~/.cache/online-extend`. */
export function defaultCacheDir(): string {
  const env = process.env.OE_LAB_CACHE;
  if (env) return resolve(env);
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg ? resolve(xdg) : join(homedir(), '.cache'), 'online-extend');
}
