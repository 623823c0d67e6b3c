/**
 * Fixtures for the layering rules in .dependency-cruiser.cjs: small files that would sit in src/, each
 * importing across a line the architecture forbids (or, for the healthy ones, a line it allows).
 * layering.test.ts drops them all into one copy of the repository, runs dependency-cruiser with the real
 * configuration once, and checks that each fixture is reported under exactly the rules it lists.
 *
 * The file contents are strings, not files under test/, so neither tsc nor ESLint reads them: only their
 * import specifiers matter to dependency-cruiser, never the imported names. Where a fixture needs a module
 * of a kind (an rpc client, a host tool, a lab part) it brings its own stub, so it does not break when
 * others rename real modules; the issue's own examples import the real modules on purpose.
 */

/** One fixture: the files it adds to the copy of the repository and the rules that must catch it. */
export interface LayeringFixture {
  /** Reads as a sentence after "a module that …". */
  name: string;
  /** Path relative to the repository root → file content. `append` adds lines to an existing file. */
  files: Record<string, string | { append: string }>;
  /** Every rule name dependency-cruiser must report for these files, and no other (empty: healthy). */
  rules: string[];
}

/** Reported for every module no entry point reaches — which every dropped-in fixture file is. */
export const UNREACHABLE = 'reachable-from-an-entry-point';

/** The violations the issue found the old ESLint rules letting through (issue E, point 1), first. */
export const VIOLATING: LayeringFixture[] = [
  {
    name: 'sits in src/virt/libvirt and imports the compute manager',
    files: { 'src/virt/libvirt/layeringFixture.ts': "import { ComputeManager } from '../../compute/manager.js';\nexport const m = ComputeManager;\n" },
    rules: ['virt-below-the-services'],
  },
  {
    name: 'sits in src/virt/libvirt and imports the SQLite store',
    files: { 'src/virt/libvirt/layeringFixtureDb.ts': "import { SqliteStore } from '../../db/sqlite.js';\nexport const s = SqliteStore;\n" },
    rules: ['virt-below-the-services', 'db-implementation-only-from-entry-points'],
  },
  {
    name: 'sits in src/virt/libvirt and imports an API route',
    files: { 'src/virt/libvirt/layeringFixtureApi.ts': "import { registerServers } from '../../api/routes/compute/servers.js';\nexport const r = registerServers;\n" },
    rules: ['virt-below-the-services', 'api-only-from-entry-points'],
  },
  {
    name: 'sits in src/volume/backends and imports the compute manager',
    files: { 'src/volume/backends/layeringFixture.ts': "import { ComputeManager } from '../../compute/manager.js';\nexport const m = ComputeManager;\n" },
    rules: ['backends-below-the-services'],
  },
  {
    name: 'sits in src/volume/backends and imports the SQLite store',
    files: { 'src/volume/backends/layeringFixtureDb.ts': "import { SqliteStore } from '../../db/sqlite.js';\nexport const s = SqliteStore;\n" },
    rules: ['backends-below-the-services', 'db-implementation-only-from-entry-points'],
  },
  {
    name: 'sits in src/volume/backends and imports the configuration loader',
    files: { 'src/volume/backends/layeringFixtureConfig.ts': "import { loadConfig } from '../../config.js';\nexport const l = loadConfig;\n" },
    rules: ['config-only-in-entry-points'],
  },
  {
    name: 'sits in src/db and imports the libvirt driver',
    files: { 'src/db/layeringFixture.ts': "import { LibvirtDriver } from '../virt/libvirt/driver.js';\nexport const d = LibvirtDriver;\n" },
    rules: ['db-imports-nothing-above', 'db-never-names-a-driver', 'virt-drivers-only-from-entry-points'],
  },
  // One per remaining rule.
  {
    name: 'sits in src/db and imports only a type from the libvirt driver',
    files: { 'src/db/layeringFixtureType.ts': "import type { LibvirtDriver } from '../virt/libvirt/driver.js';\nexport type D = LibvirtDriver;\n" },
    rules: ['db-never-names-a-driver', 'virt-drivers-only-from-entry-points'],
  },
  {
    name: 'sits in src/db and calls up into the compute service',
    files: { 'src/db/layeringFixtureUp.ts': "import { ComputeManager } from '../compute/manager.js';\nexport const m = ComputeManager;\n" },
    rules: ['db-imports-nothing-above'],
  },
  {
    name: 'sits in src/compute and imports the CLI',
    files: { 'src/compute/layeringFixtureCli.ts': "import { main } from '../cli.js';\nexport const m = main;\n" },
    rules: ['entry-points-are-roots'],
  },
  {
    name: 'sits in src/compute and imports the API',
    files: { 'src/compute/layeringFixtureApi.ts': "import { createServer } from '../api/server.js';\nexport const c = createServer;\n" },
    rules: ['api-only-from-entry-points'],
  },
  {
    name: 'sits in src/volume and imports only a type from the configuration',
    files: { 'src/volume/layeringFixtureConfig.ts': "import type { Config } from '../config.js';\nexport type C = Config;\n" },
    rules: ['config-only-in-entry-points'],
  },
  {
    name: 'sits in src/compute and opens the SQLite store itself',
    files: { 'src/compute/layeringFixtureDb.ts': "import { SqliteStore } from '../db/sqlite.js';\nexport const s = SqliteStore;\n" },
    rules: ['db-implementation-only-from-entry-points'],
  },
  {
    name: 'sits in src/compute and imports only a type from the volume service',
    files: { 'src/compute/layeringFixtureVolume.ts': "import type { VolumeService } from '../volume/service.js';\nexport type V = VolumeService;\n" },
    rules: ['compute-never-imports-volume'],
  },
  {
    name: 'sits in src/volume and imports only a type from the compute API (today\'s attach and reconciler)',
    files: { 'src/volume/layeringFixtureCompute.ts': "import type { ComputeAPI } from '../compute/api.js';\nexport type C = ComputeAPI;\n" },
    rules: ['volume-never-imports-compute'],
  },
  {
    name: 'sits in src/volume and runs virt code',
    files: { 'src/volume/layeringFixtureVirt.ts': "import '../virt/driver.js';\nexport const v = 1;\n" },
    rules: ['volume-service-not-into-virt-at-runtime'],
  },
  {
    name: 'sits in src/auth and imports an rpc client',
    files: {
      'src/rpc/layeringFixtureAuthClient.ts': 'export const client = 1;\n',
      'src/auth/layeringFixture.ts': "import { client } from '../rpc/layeringFixtureAuthClient.js';\nexport const c = client;\n",
    },
    rules: ['rpc-only-from-services-api-and-entry-points'],
  },
  {
    name: 'sits in src/rpc and runs virt code',
    files: { 'src/rpc/layeringFixtureVirt.ts': "import '../virt/driver.js';\nexport const v = 1;\n" },
    rules: ['rpc-imports-only-errors-and-util'],
  },
  {
    name: 'sits in src/compute and picks the fake virt driver itself',
    files: { 'src/compute/layeringFixtureDriver.ts': "import { FakeDriver } from '../virt/fake/driver.js';\nexport const d = FakeDriver;\n" },
    rules: ['virt-drivers-only-from-entry-points'],
  },
  {
    name: 'sits in src/virt/fake and imports the libvirt driver',
    files: { 'src/virt/fake/layeringFixture.ts': "import { LibvirtDriver } from '../libvirt/driver.js';\nexport const d = LibvirtDriver;\n" },
    rules: ['virt-driver-not-into-another'],
  },
  {
    name: 'sits in src/volume and picks the file backend itself',
    files: { 'src/volume/layeringFixtureBackend.ts': "import { FileBackend } from './backends/file.js';\nexport const b = FileBackend;\n" },
    rules: ['backend-implementations-only-from-entry-points'],
  },
  {
    name: 'sits in src/volume/backends and runs virt code',
    files: { 'src/volume/backends/layeringFixtureVirt.ts': "import '../../virt/driver.js';\nexport const v = 1;\n" },
    rules: ['backends-not-into-virt-at-runtime'],
  },
  {
    name: 'sits in src/volume/backends and names a type from the libvirt driver',
    files: { 'src/volume/backends/layeringFixtureType.ts': "import type { LibvirtDriver } from '../../virt/libvirt/driver.js';\nexport type D = LibvirtDriver;\n" },
    rules: ['backends-never-name-a-virt-driver-type', 'virt-drivers-only-from-entry-points'],
  },
  {
    name: 'sits in src/compute and runs a host tool',
    files: {
      'src/host/layeringFixtureTool.ts': 'export const tool = 1;\n',
      'src/compute/layeringFixtureHost.ts': "import { tool } from '../host/layeringFixtureTool.js';\nexport const t = tool;\n",
    },
    rules: ['host-only-from-drivers-and-lab'],
  },
  {
    name: 'sits in src/host and imports virt',
    files: { 'src/host/layeringFixtureVirt.ts': "import '../virt/driver.js';\nexport const v = 1;\n" },
    rules: ['host-imports-only-util-and-errors'],
  },
  {
    name: 'sits in src/compute and imports the lab',
    files: {
      'src/lab/layeringFixturePart.ts': 'export const part = 1;\n',
      'src/compute/layeringFixtureLab.ts': "import { part } from '../lab/layeringFixturePart.js';\nexport const p = part;\n",
    },
    rules: ['lab-only-from-demo-and-cli', 'lab-only-through-its-index'],
  },
  {
    name: 'sits in src/lab and reaches into the compute service',
    files: { 'src/lab/layeringFixtureCompute.ts': "import { ComputeManager } from '../compute/manager.js';\nexport const m = ComputeManager;\n" },
    rules: ['lab-uses-only-tools'],
  },
  {
    name: 'sits in src/util and imports the request context',
    files: { 'src/util/layeringFixture.ts': "import type { RequestContext } from '../context.js';\nexport type R = RequestContext;\n" },
    rules: ['util-is-a-leaf'],
  },
  {
    name: 'is the request context importing a service shape',
    files: {
      'src/compute/layeringFixtureShape.ts': 'export interface Shape { id: string }\n',
      'src/context.ts': { append: "import type { Shape } from './compute/layeringFixtureShape.js';\nexport type LayeringFixtureShape = Shape;\n" },
    },
    rules: ['errors-and-context-are-leaves'],
  },
  {
    name: 'sits in src/util and imports test code',
    files: {
      'test/support/layeringFixture.ts': 'export const helper = 1;\n',
      'src/util/layeringFixtureTest.ts': "import { helper } from '../../test/support/layeringFixture.js';\nexport const h = helper;\n",
    },
    rules: ['src-never-imports-tests'],
  },
  {
    name: 'is one of two util modules importing each other',
    files: {
      'src/util/layeringFixtureCycleA.ts': "import { b } from './layeringFixtureCycleB.js';\nexport const a = (): number => b() + 1;\n",
      'src/util/layeringFixtureCycleB.ts': "import { a } from './layeringFixtureCycleA.js';\nexport const b = (): number => a() - 1;\n",
    },
    rules: ['no-circular'],
  },
  {
    name: 'imports nothing and is imported by nobody',
    files: { 'src/util/layeringFixtureOrphan.ts': 'export const unused = 1;\n' },
    rules: ['no-orphans', UNREACHABLE],
  },
  {
    name: 'is a barrel nobody imports',
    files: { 'src/virt/layeringFixtureBarrel.ts': "export * from './driver.js';\n" },
    rules: [UNREACHABLE],
  },
  {
    name: 'sits in src/util and imports a devDependency',
    files: { 'src/util/layeringFixtureDev.ts': "import { describe } from 'vitest';\nexport const d = describe;\n" },
    rules: ['no-dev-dependencies-in-src'],
  },
  {
    name: 'sits in src/util and imports a package that is not in package.json',
    files: { 'src/util/layeringFixtureNoPkg.ts': "import { build } from 'esbuild';\nexport const b = build;\n" },
    rules: ['no-non-package-json'],
  },
  {
    name: 'sits in src/util and imports a module that does not exist',
    files: { 'src/util/layeringFixtureMissing.ts': "import { gone } from './layeringFixtureNowhere.js';\nexport const g = gone;\n" },
    rules: ['not-to-unresolvable'],
  },
];

/** Lines the architecture allows: each must be reported under no rule (but UNREACHABLE). */
export const HEALTHY: LayeringFixture[] = [
  {
    name: 'sits in src/volume and asks compute through an rpc client',
    files: {
      'src/rpc/layeringHealthyClient.ts':
        "import { errors } from '../errors.js';\nimport type { VolumeRecord } from '../db/store.js';\nexport type V = VolumeRecord;\nexport const client = errors;\n",
      'src/volume/layeringHealthy.ts': "import { client } from '../rpc/layeringHealthyClient.js';\nexport const c = client;\n",
      'src/compute/layeringHealthy.ts': "import { client } from '../rpc/layeringHealthyClient.js';\nexport const c = client;\n",
      'src/api/layeringHealthy.ts': "import { client } from '../rpc/layeringHealthyClient.js';\nimport type { ComputeAPI } from '../compute/api.js';\nexport type C = ComputeAPI;\nexport const c = client;\n",
    },
    rules: [],
  },
  {
    name: 'is a host tool used by virt, a storage backend and the lab (which also builds libvirt domain XML)',
    files: {
      'src/host/layeringHealthyTool.ts': "import { errors } from '../errors.js';\nimport '../util/errno.js';\nexport const tool = errors;\n",
      'src/virt/libvirt/layeringHealthy.ts': "import { tool } from '../../host/layeringHealthyTool.js';\nimport './domxml.js';\nexport const t = tool;\n",
      'src/volume/backends/layeringHealthy.ts':
        "import { tool } from '../../host/layeringHealthyTool.js';\nimport type { DiskKind } from '../../virt/driver.js';\nexport type K = DiskKind;\nexport const t = tool;\n",
      'src/lab/layeringHealthy.ts': "import { tool } from '../host/layeringHealthyTool.js';\nimport { METADATA_NS } from '../virt/libvirt/domxml.js';\nexport const t = [tool, METADATA_NS];\n",
    },
    rules: [],
  },
  {
    name: 'sits in src/db and names the extend step type owned by the volume service',
    files: { 'src/db/layeringHealthy.ts': "import type { VolumeAction } from '../volume/lifecycle.js';\nimport type { ServerState } from '../virt/driver.js';\nexport type A = VolumeAction | ServerState;\n" },
    rules: [],
  },
  {
    name: 'sits in src/volume and names virt shapes and the backend interface as types',
    files: {
      'src/volume/layeringHealthyTypes.ts':
        "import type { DiskKind } from '../virt/driver.js';\nimport type { VolumeBackend } from './backends/backend.js';\nimport type { VolumeStore } from '../db/store.js';\nexport type T = [DiskKind, VolumeBackend, VolumeStore];\n",
    },
    rules: [],
  },
  {
    name: 'sits in src/compute and drives the virt driver interface',
    files: { 'src/compute/layeringHealthyVirt.ts': "import type { VirtDriver } from '../virt/driver.js';\nimport { errors } from '../errors.js';\nexport type D = VirtDriver;\nexport const e = errors;\n" },
    rules: [],
  },
];
