/**
 * Schema migrations, applied in order; the index + 1 is the schema version (PRAGMA user_version).
 * A new one here gets its PostgreSQL twin, same number, in db/postgres/migrations.ts.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: compute inventory, audit, tokens
  `
  CREATE TABLE servers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    project_id TEXT NOT NULL,
    host TEXT NOT NULL,
    state TEXT NOT NULL,
    task_state TEXT,
    updated_at TEXT NOT NULL
  );
  CREATE INDEX servers_project ON servers(project_id);
  CREATE INDEX servers_host ON servers(host);
  CREATE TABLE attachments (
    server_id TEXT NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    volume_id TEXT NOT NULL,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    format TEXT,
    source TEXT,
    readonly INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (server_id, volume_id)
  );
  CREATE TABLE instance_actions (
    request_id TEXT NOT NULL,
    server_id TEXT NOT NULL,
    action TEXT NOT NULL,
    event TEXT NOT NULL,
    user_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    start_time TEXT NOT NULL,
    finish_time TEXT,
    result TEXT,
    message TEXT,
    details TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (server_id, request_id)
  );
  CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    roles TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
  );
  `,
  // 2: volume service
  `
  CREATE TABLE volumes (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    status TEXT NOT NULL,
    backend TEXT NOT NULL,
    format TEXT,
    server_id TEXT,
    server_project_id TEXT,
    device TEXT,
    extend TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
  );
  CREATE INDEX volumes_project ON volumes(project_id);
  CREATE INDEX volumes_status ON volumes(status);
  CREATE TABLE volume_actions (
    request_id TEXT NOT NULL,
    volume_id TEXT NOT NULL,
    action TEXT NOT NULL,
    user_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    start_time TEXT NOT NULL,
    finish_time TEXT,
    result TEXT,
    message TEXT,
    compute_request_ids TEXT NOT NULL DEFAULT '[]',
    details TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (volume_id, request_id)
  );
  `,
  // 3: a version per volume for conditional updates that must see nothing changed
  `
  ALTER TABLE volumes ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
  `,
  // 4: indexes for keyset paging (list endpoints' limit/marker) and the inventory sync by
  // difference. Actions page on their primary keys (request ids are time-ordered): an index more
  // on instance_actions cost every audited call about a tenth of its time, measured.
  `
  CREATE INDEX volumes_by_created ON volumes(created_at, id);
  CREATE INDEX volumes_project_by_created ON volumes(project_id, created_at, id);
  CREATE INDEX servers_by_name ON servers(name, id);
  CREATE INDEX servers_project_by_name ON servers(project_id, name, id);
  CREATE INDEX servers_host_id ON servers(host, id);
  DROP INDEX servers_host;
  `,
  // 5: the database's identity, recorded in the data dir's marker (db/dataDir.ts) so that a
  // database swapped in from elsewhere (a fresh one, another host's) is refused at start rather
  // than silently orphaning the volumes of the one it replaced. Random per database, made here by
  // SQLite's own generator (seeded from the OS), so every database gets one when its schema is made.
  `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
  INSERT INTO meta (key, value) VALUES ('database_id', lower(hex(randomblob(16))));
  `,
  // 6: Cinder's volume fields the volume API shows (v3 views): who created it, its description
  // and metadata (JSON text), and when its attachment was made. NULL on volumes made before.
  `
  ALTER TABLE volumes ADD COLUMN user_id TEXT;
  ALTER TABLE volumes ADD COLUMN description TEXT;
  ALTER TABLE volumes ADD COLUMN metadata TEXT;
  ALTER TABLE volumes ADD COLUMN attached_at TEXT;
  CREATE INDEX volumes_by_name ON volumes(name);
  `,
  // 7: the embedded Keystone's users (identity/): a project's name is its id, every user is in
  // the default domain. How each token was obtained (Keystone's methods and audit ids) sits
  // beside its token row and goes with it (the foreign key cascades; foreign_keys is on).
  `
  CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    project_id TEXT NOT NULL,
    roles TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
  );
  CREATE TABLE token_auth (
    hash TEXT PRIMARY KEY REFERENCES tokens(hash) ON DELETE CASCADE,
    methods TEXT NOT NULL,
    audit_ids TEXT NOT NULL
  ) WITHOUT ROWID;
  CREATE INDEX tokens_user ON tokens(user_id);
  `,
  // 8: servers created through the API (POST /servers): who made them, when, from which image and
  // flavor, Nova's metadata and the fault of a failed build; the flavors and images they are built
  // from (registered with the CLI). The inventory sync never writes these columns.
  `
  ALTER TABLE servers ADD COLUMN user_id TEXT;
  ALTER TABLE servers ADD COLUMN created_at TEXT;
  ALTER TABLE servers ADD COLUMN image_ref TEXT;
  ALTER TABLE servers ADD COLUMN flavor_ref TEXT;
  ALTER TABLE servers ADD COLUMN metadata TEXT;
  ALTER TABLE servers ADD COLUMN fault TEXT;
  CREATE TABLE flavors (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    vcpus INTEGER NOT NULL,
    ram_mb INTEGER NOT NULL,
    disk_gb INTEGER NOT NULL,
    ephemeral_gb INTEGER NOT NULL DEFAULT 0,
    swap_mb INTEGER NOT NULL DEFAULT 0,
    is_public INTEGER NOT NULL DEFAULT 1,
    description TEXT
  );
  CREATE TABLE images (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    disk_path TEXT,
    disk_format TEXT,
    kernel_path TEXT,
    ramdisk_path TEXT,
    cmdline TEXT,
    min_disk_gb INTEGER NOT NULL DEFAULT 0,
    min_ram_mb INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
  );
  `,
  // 9: what the hypervisor reports of a server's size (vCPUs, memory in MiB), written by the
  // inventory sync; NULL when the driver could not measure it. A server found on the host has no
  // flavor: the API shows its host-defined size from these.
  `
  ALTER TABLE servers ADD COLUMN vcpus INTEGER;
  ALTER TABLE servers ADD COLUMN memory_mb INTEGER;
  `,
  // 10: when a server found on the host was first seen (Nova's `created` for it; a server made
  // through POST /servers has created_at). Rows from before: their last update stands in once.
  `
  ALTER TABLE servers ADD COLUMN discovered_at TEXT;
  UPDATE servers SET discovered_at = updated_at WHERE created_at IS NULL;
  `,
  // 11 (G): compute services and their heartbeats (Nova's services table), and the lease that
  // makes one workflow worker at a time drive a volume's extend (kept out of the volume row so a
  // renewal never bumps the volume's version). Times are ISO 8601 text, compared as text.
  `
  CREATE TABLE services (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    host TEXT NOT NULL,
    binary TEXT NOT NULL,
    topic TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    disabled_reason TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (host, binary)
  );
  CREATE TABLE extend_leases (
    volume_id TEXT PRIMARY KEY REFERENCES volumes(id) ON DELETE CASCADE,
    owner TEXT NOT NULL,
    expires_at TEXT NOT NULL
  );
  CREATE INDEX extend_leases_owner ON extend_leases(owner);
  `,
  // 12 (H): what each extend did about the guest's filesystem (the grow_fs step): asked or not,
  // and the outcome the guest reported. Kept per extend (request id), beside the volume's
  // actions, and removed with the volume. Booleans 0/1, NULL while unknown.
  `
  CREATE TABLE volume_fs_growths (
    volume_id TEXT NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,
    request_id TEXT NOT NULL,
    requested INTEGER NOT NULL,
    grown INTEGER,
    reason TEXT,
    device TEXT,
    partition_grown INTEGER,
    fs_type TEXT,
    mountpoint TEXT,
    fs_bytes_before INTEGER,
    fs_bytes INTEGER,
    requested_at TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (volume_id, request_id)
  ) WITHOUT ROWID;
  CREATE INDEX volume_fs_growths_latest ON volume_fs_growths(volume_id, requested_at, request_id);
  `,
  // 13 (H): encrypted volumes (QEMU-native LUKS): the format, the header's payload offset in bytes
  // (the guest sees size_bytes - payload_offset) and the passphrase, which only
  // getVolumeEncryptionKey reads (never mapped into a VolumeRecord).
  `
  ALTER TABLE volumes ADD COLUMN encryption TEXT;
  ALTER TABLE volumes ADD COLUMN payload_offset INTEGER;
  ALTER TABLE volumes ADD COLUMN encryption_key TEXT;
  `,
];
