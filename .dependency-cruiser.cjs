// The layering of src/, as data (issue E point 1). `npm run lint:deps` checks src/ against it, and
// test/layering/layering.test.ts drops one violating fixture per rule into a copy of src/ and checks each
// one fails with its rule's name, so a rule that stops biting fails CI.
//
// The architecture (README "Layers"), top to bottom:
//   entry points  src/cli.ts, src/cli/**, src/app.ts (composition root), src/agent.ts (the compute agent's), src/demo.ts (and its
//                 parts: src/demo/**), src/cli/labMain.ts
//   api           src/api/** (Fastify routes, TypeBox schemas, transport), src/auth/** at its edge
//   services      src/compute/** | src/volume/** (not backends) — they talk only through src/rpc/**
//   rpc           src/rpc/** (and src/httpClient.ts until it moves there): the RPC boundary
//   drivers       src/virt/** | src/volume/backends/**      store: src/db/store.ts (interface)
//   host tools    src/host/** (subprocess runner, tgt, iSCSI capacity, qcow2 header, file growth)
//   leaves        src/util/**, src/errors.ts, src/context.ts
// src/lab/** is test infrastructure beside all this: the demo (and the CLI's `lab` command) use it.
//
// Paths are regular expressions over paths relative to the repository root. Each rule says whether a
// type-only import (`import type`, erased at compile time) counts: where a record shape may be named across
// a layer, the rule sets dependencyTypesNot: ['type-only'] and says why.

/** The composition roots: the only modules that read the configuration and pick implementations. */
const ENTRY = '^src/(app|agent|cli|demo)\\.ts$|^src/(cli|demo)/';
/** Where the process starts: everything in src/ must be reachable from here. */
const ROOTS = '^src/cli\\.ts$|^src/cli/labMain\\.ts$';
const API = '^src/api/';
/** The identity API (Keystone's role) is an HTTP layer beside src/api: it shares its transport handling. */
const IDENTITY_HTTP = '^src/identity/app\\.ts$';
const COMPUTE = '^src/compute/';
/** The volume service and its workflow — not the storage backends below it. */
const VOLUME = '^src/volume/(?!backends/)';
const BACKENDS = '^src/volume/backends/';
const VIRT = '^src/virt/';
const VIRT_DRIVERS = '^src/virt/(fake|libvirt)/';
const RPC = '^src/rpc/|^src/httpClient\\.ts$';
const HOST = '^src/host/';
const LAB = '^src/lab/';
const DB = '^src/db/';
/** The store's implementation (SQLite, the data directory, migrations): everything in db/ but the interface. */
const DB_IMPL = '^src/db/(?!store\\.ts$)';
/** src/config.ts, or src/config/** should it be split. */
const CONFIG = '^src/config(\\.ts$|/)';
const ERRORS = '^src/errors\\.ts$';
const UTIL = '^src/util/';
const CONTEXT = '^src/context\\.ts$';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    // ---- entry points and the HTTP layer are the top: nothing below imports them ----
    {
      name: 'entry-points-are-roots',
      comment:
        'app.ts, cli.ts, cli/** and demo.ts compose the process; a module below them importing one ' +
        'would make the layers a cycle. Only other entry points may import them.',
      severity: 'error',
      from: { pathNot: ENTRY },
      to: { path: ENTRY },
    },
    {
      name: 'api-only-from-entry-points',
      comment:
        'src/api is the HTTP layer (Nova/Cinder API): the services, drivers and stores below it never ' +
        'import it, not even its types (a service shape that the API needs lives in the service or in rpc/).',
      severity: 'error',
      from: { pathNot: [ENTRY, API, IDENTITY_HTTP] },
      to: { path: API },
    },
    {
      name: 'config-only-in-entry-points',
      comment:
        'The configuration is loaded once, in an entry point, and what each part needs is passed in ' +
        '(src/config.ts). Nothing else imports it, not even its types: a part declares the options it takes.',
      severity: 'error',
      from: { pathNot: [ENTRY, CONFIG] },
      to: { path: CONFIG },
    },
    // ---- the store: the interface below the services, the implementation only in the entry points ----
    {
      name: 'db-implementation-only-from-entry-points',
      comment:
        'Only an entry point opens the database (db/sqlite.ts, db/dataDir.ts) and hands the services a ' +
        'store; everything else programs against the interface in db/store.ts.',
      severity: 'error',
      from: { pathNot: [ENTRY, DB] },
      to: { path: DB_IMPL },
    },
    {
      name: 'db-imports-nothing-above',
      comment:
        'The store never calls up into the services, drivers, API or tools at run time. Type-only imports ' +
        'are allowed: its records name shapes owned by the layer that defines them (the extend step union ' +
        'from volume, DiskKind/ServerState from virt/driver.ts); those are erased at compile time.',
      severity: 'error',
      from: { path: DB },
      to: {
        path: [API, '^src/auth/', COMPUTE, '^src/volume/', VIRT, RPC, HOST, LAB],
        dependencyTypesNot: ['type-only'],
      },
    },
    {
      name: 'db-never-names-a-driver',
      comment:
        'Not even a type from a driver implementation or a storage backend: the issue found src/db able to ' +
        'import LibvirtDriver. Shapes the store keeps come from interfaces (virt/driver.ts).',
      severity: 'error',
      from: { path: DB },
      to: { path: [VIRT_DRIVERS, BACKENDS] },
    },
    // ---- the services: compute and volume talk through rpc/ only ----
    {
      name: 'compute-never-imports-volume',
      comment:
        'Compute and volume are separate services (Nova, Cinder) that will run on different hosts: compute ' +
        'reaches the volume service through rpc/volumeClient, never in-process. Type-only imports count ' +
        'too: shared shapes live in rpc/.',
      severity: 'error',
      from: { path: COMPUTE },
      to: { path: '^src/volume/' },
    },
    {
      name: 'volume-never-imports-compute',
      comment:
        'The volume service asks compute through rpc/computeClient (as Cinder asks Nova), never through ' +
        'ComputeAPI in-process. Type-only imports count too: shared shapes live in rpc/.',
      severity: 'error',
      from: { path: VOLUME },
      to: { path: COMPUTE },
    },
    {
      name: 'volume-service-not-into-virt-at-runtime',
      comment:
        'The volume service reaches the hypervisor only through compute (over rpc/). Type-only imports ' +
        'of shapes from virt/driver.ts (DiskKind, ServerState) are allowed until they move to rpc/.',
      severity: 'error',
      from: { path: VOLUME },
      to: { path: VIRT, dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'rpc-only-from-services-api-and-entry-points',
      comment:
        'rpc/ holds the clients between the services (httpClient, computeClient, volumeClient): used by ' +
        'compute, volume, the API and the entry points, not by drivers, backends, host tools or the store.',
      severity: 'error',
      from: { pathNot: [ENTRY, API, COMPUTE, VOLUME, RPC] },
      to: { path: RPC },
    },
    {
      name: 'rpc-imports-only-errors-and-util',
      comment:
        'The RPC boundary carries catalogue errors and plain shapes, nothing else at run time: it imports ' +
        'errors.ts and util/ (and other rpc/ modules); `import type` of record shapes is allowed.',
      severity: 'error',
      from: { path: RPC },
      to: {
        path: '^src/',
        pathNot: [RPC, ERRORS, UTIL, CONTEXT],
        dependencyTypesNot: ['type-only'],
      },
    },
    // ---- the drivers: virt and storage backends ----
    {
      name: 'virt-drivers-only-from-entry-points',
      comment:
        'Only a composition root picks a virt driver (fake or libvirt); compute programs against the ' +
        'driver interface in virt/driver.ts. The lab, which defines libvirt domains for the tests, may ' +
        'use the libvirt driver\'s domain XML (one escaper, one metadata namespace).',
      severity: 'error',
      from: { pathNot: [ENTRY, VIRT_DRIVERS, LAB] },
      to: { path: VIRT_DRIVERS },
    },
    {
      name: 'virt-driver-not-into-another',
      comment: 'One virt driver never imports another (fake ↛ libvirt, libvirt ↛ fake); shared code lives in virt/ or host/.',
      severity: 'error',
      from: { path: '^src/virt/(fake|libvirt)/' },
      to: { path: VIRT_DRIVERS, pathNot: '^src/virt/$1/' },
    },
    {
      name: 'virt-below-the-services',
      comment:
        'virt is driven by compute: it never imports volume (services or backends), compute, the store, ' +
        'the API, auth or rpc — not even types. What it needs is passed in.',
      severity: 'error',
      from: { path: VIRT },
      to: { path: ['^src/volume/', COMPUTE, DB, API, '^src/auth/', RPC] },
    },
    {
      name: 'backend-implementations-only-from-entry-points',
      comment:
        'Only a composition root picks storage backends (file, block, iSCSI); the volume service programs ' +
        'against the VolumeBackend interface in volume/backends/backend.ts.',
      severity: 'error',
      from: { pathNot: [ENTRY, BACKENDS] },
      to: { path: BACKENDS, pathNot: '^src/volume/backends/backend\\.ts$' },
    },
    {
      name: 'backends-below-the-services',
      comment:
        'Storage backends (Cinder drivers) never import the services, the store, the API, auth, rpc or ' +
        'compute — not even types; they are handed what they need.',
      severity: 'error',
      from: { path: BACKENDS },
      to: { path: [VOLUME, COMPUTE, DB, API, '^src/auth/', RPC] },
    },
    {
      name: 'backends-not-into-virt-at-runtime',
      comment:
        'Storage backends and virt drivers are siblings below the services: a backend never runs virt code ' +
        '(the issue found one able to import the libvirt driver). A mechanism both need (the qcow2 header ' +
        'reader) lives in host/. Type-only imports of virt/driver.ts shapes (DiskKind, DiskSource) are allowed.',
      severity: 'error',
      from: { path: BACKENDS },
      to: { path: VIRT, dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'backends-never-name-a-virt-driver-type',
      comment: 'Not even a type from a virt driver implementation: a backend knows only the driver interface.',
      severity: 'error',
      from: { path: BACKENDS },
      to: { path: VIRT_DRIVERS },
    },
    // ---- host tools ----
    {
      name: 'host-only-from-drivers-and-lab',
      comment:
        'host/ holds the host mechanisms (subprocess runner, tgt, iSCSI capacity, qcow2 header, file ' +
        'growth) once; virt, the storage backends and the lab use them. The services reach the host only ' +
        'through their drivers.',
      severity: 'error',
      from: { pathNot: [HOST, VIRT, BACKENDS, LAB] },
      to: { path: HOST },
    },
    {
      name: 'host-imports-only-util-and-errors',
      comment: 'Host tools are a leaf above util/: they import util/, errors.ts and each other, nothing else in src/.',
      severity: 'error',
      from: { path: HOST },
      to: { path: '^src/', pathNot: [HOST, UTIL, ERRORS] },
    },
    // ---- the lab is test infrastructure ----
    {
      name: 'lab-only-from-demo-and-cli',
      comment:
        'src/lab is test infrastructure (packages, guest image, private libvirtd/tgtd). Only the demo ' +
        'and the CLI\'s documented `online-extend lab up|down` command (src/cli/lab.ts, which CI uses; it ' +
        'loads the lab only when the command runs) may import it.',
      severity: 'error',
      from: { pathNot: [LAB, '^src/demo\\.ts$', '^src/demo/', '^src/cli/lab\\.ts$'] },
      to: { path: LAB },
    },
    {
      name: 'lab-only-through-its-index',
      comment: 'Users of the lab see its small API, src/lab/index.ts, not its parts.',
      severity: 'error',
      from: { pathNot: LAB },
      to: { path: LAB, pathNot: '^src/lab/index\\.ts$' },
    },
    {
      name: 'lab-uses-only-tools',
      comment:
        'The lab drives the host (libvirtd, tgtd, guests) with host/ tools and virt shapes; it never ' +
        'reaches into the services, the store, the API, auth, rpc or the storage backends.',
      severity: 'error',
      from: { path: LAB },
      to: { path: [API, '^src/auth/', COMPUTE, '^src/volume/', DB, RPC] },
    },
    // ---- leaves ----
    {
      name: 'util-is-a-leaf',
      comment: 'util/ is below everything: it imports other util/ modules and errors.ts, nothing else in src/.',
      severity: 'error',
      from: { path: UTIL },
      to: { path: '^src/', pathNot: [UTIL, ERRORS] },
    },
    {
      name: 'errors-and-context-are-leaves',
      comment: 'The error catalogue and the request context are imported by every layer, so they import no layer.',
      severity: 'error',
      from: { path: [ERRORS, CONTEXT] },
      to: { path: '^src/', pathNot: [UTIL, ERRORS, CONTEXT] },
    },
    {
      name: 'src-never-imports-tests',
      comment: 'The product never depends on test/ or bench/ code.',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
    // ---- whole-graph rules ----
    {
      name: 'no-circular',
      comment: 'Dependencies point one way; a cycle (type-only ones included) means two modules are one.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-orphans',
      comment: 'A module with no imports and no importers is dead (entry points excepted).',
      severity: 'error',
      from: { orphan: true, pathNot: ROOTS },
      to: {},
    },
    {
      name: 'reachable-from-an-entry-point',
      comment:
        'Every module in src/ is reachable from a process entry (src/cli.ts, src/cli/labMain.ts): a barrel or ' +
        'module nobody imports is dead code, even when it imports others (which no-orphans cannot see).',
      severity: 'error',
      from: { path: ROOTS },
      to: { path: '^src/', pathNot: ROOTS, reachable: false },
    },
    {
      name: 'no-dev-dependencies-in-src',
      comment:
        'src/ ships; a devDependency is not installed with it. Type-only imports are erased (e.g. @types/*).',
      severity: 'error',
      from: { path: '^src/' },
      to: { dependencyTypes: ['npm-dev'], dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'no-non-package-json',
      comment: 'A package src/ imports must be in package.json\'s dependencies, or it may be missing in production.',
      severity: 'error',
      from: { path: '^src/' },
      to: { dependencyTypes: ['npm-no-pkg', 'npm-unknown'] },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'An import that does not resolve to a file is a typo or a removed module.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    // Type-only imports are part of the graph, so rules can decide about them (dependencyTypesNot).
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    doNotFollow: { path: 'node_modules' },
    // src/**/*.ts import each other as './x.js' (NodeNext); resolve that to the .ts file.
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.js', '.d.ts'],
      mainFields: ['module', 'main', 'types', 'typings'],
    },
    skipAnalysisNotInRules: true,
    progress: { type: 'none' },
  },
};
