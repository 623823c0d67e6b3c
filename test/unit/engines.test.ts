/**
 * Every package the lockfile installs runs on the Node this project supports (package.json
 * `engines`, Node 20): a dependency that declares a newer Node only (cookie@2 wants Node >= 22)
 * is either replaced or pinned (`overrides`), never installed with an EBADENGINE warning.
 */
import { readFileSync } from 'node:fs';
import semver from 'semver';
import { describe, expect, it } from 'vitest';

interface LockPackage {
  version?: string;
  engines?: Record<string, string> | string[];
}

const root = new URL('../../', import.meta.url);
const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as { engines: { node: string }; overrides?: Record<string, string> };
const lock = JSON.parse(readFileSync(new URL('package-lock.json', root), 'utf8')) as { packages: Record<string, LockPackage> };

/** The lowest Node version our own `engines` admits (the one a fresh machine may have). */
const oldestSupported = semver.minVersion(pkg.engines.node)!.version;

/** The packages whose declared Node range excludes `version`, as "path (range)". */
function excluding(version: string, packages: Record<string, LockPackage>): string[] {
  const out: string[] = [];
  for (const [path, p] of Object.entries(packages)) {
    const range = !Array.isArray(p.engines) ? p.engines?.node : undefined;
    if (path === '' || range === undefined) continue;
    if (!semver.satisfies(version, range, { includePrerelease: true })) out.push(`${path} (${range})`);
  }
  return out;
}

describe('dependencies and Node 20', () => {
  it('our engines admit Node 20, and the running Node is one we support', () => {
    expect(semver.satisfies('20.0.0', pkg.engines.node)).toBe(true);
    expect(semver.satisfies(process.version, pkg.engines.node)).toBe(true);
  });

  it('every installed package admits the running Node and Node 20', () => {
    expect(excluding(process.version, lock.packages)).toEqual([]);
    expect(excluding('20.19.0', lock.packages)).toEqual([]);
  });

  it('the check sees a package that wants a newer Node (cookie@2 wants >= 22)', () => {
    const sample = { 'node_modules/cookie': { version: '2.0.2', engines: { node: '>=22' } }, 'node_modules/ok': { engines: { node: '>=18' } } };
    expect(excluding('20.19.0', sample)).toEqual(['node_modules/cookie (>=22)']);
    expect(excluding('22.1.0', sample)).toEqual([]);
  });

  it(`the lowest Node our engines admit (${oldestSupported}) is a Node 20`, () => {
    expect(semver.major(oldestSupported)).toBe(20);
  });

  it('light-my-request is pinned to a release whose cookie runs on Node 20', () => {
    expect(pkg.overrides?.['light-my-request']).toBeDefined();
    const installed = Object.entries(lock.packages).filter(([path]) => path.endsWith('node_modules/cookie'));
    expect(installed.length).toBeGreaterThan(0);
    for (const [, p] of installed) expect(semver.major(p.version!)).toBeLessThan(2);
  });
});
