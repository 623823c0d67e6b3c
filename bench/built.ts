/**
 * The benchmarks measure the code users run: the build in dist/ (`npm run build`, tsc), not
 * src/ through tsx, whose transpiled output is slower (it names every closure it makes at run time:
 * ~20% of a get_blockdev's CPU). `npm run bench` builds first; a bench run on its own checks here
 * that dist/ is not older than src/.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

/** The newest modification time (ms) of the files under `dir` whose names end with `ext`; 0 when none. */
function newest(dir: string, ext: string): number {
  let out = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && e.name.endsWith(ext)) out = Math.max(out, statSync(join(e.parentPath, e.name)).mtimeMs);
  }
  return out;
}

/** Throws, saying to run `npm run build`, when dist/ is missing or older than a file in src/. */
export function assertBuilt(): void {
  let built = 0;
  try {
    built = newest(join(root, 'dist'), '.js');
  } catch {
    // No dist/ at all.
  }
  const source = newest(join(root, 'src'), '.ts');
  if (built === 0 || built < source) throw new Error('dist/ is missing or older than src/: run `npm run build` first (the benchmarks measure the build users run)');
}

/** The module `path` (relative to dist/, e.g. `app.js`) of the build, typed as `T` (its source's type). */
export async function built<T>(path: string): Promise<T> {
  return (await import(pathToFileURL(join(root, 'dist', path)).href)) as T;
}
