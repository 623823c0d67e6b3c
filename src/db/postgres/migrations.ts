/**
 * The PostgreSQL schema, as migrations versioned in the `schema_migrations` table (PostgreSQL has
 * no `user_version`). Version numbers are SQLite's (db/migrations.ts): the first entry here is one
 * schema equal in meaning to SQLite's migrations 1–11; a later migration adds an entry to both
 * lists under the same number.
 *
 * Kept as SQLite has them, so db/rows.ts maps the rows of both: times are ISO 8601 text (compared
 * as text), JSON fields are JSON text, booleans are 0/1 integers. Every text column collates "C"
 * (byte order, as SQLite's BINARY), so listings and keyset paging order the same whatever the
 * database's locale. Sizes and versions are BIGINT, read back as numbers (db/postgres/pool.ts).
 */

/** Text in byte order (see the module comment). */
const T = 'TEXT COLLATE "C"';

/** One PostgreSQL migration: `version` is the schema version it brings the database to. */
export interface PgMigration {
  version: number;
  sql: string;
}

/** Migrations in order; the last one's version is the schema this build knows. */
export const PG_MIGRATIONS: readonly PgMigration[] = [
  {
    // 1–11: SQLite's schema up to the compute services and extend leases (G), in one step.
    version: 11,
    sql: `
    CREATE TABLE servers (
      id ${T} PRIMARY KEY,
      name ${T} NOT NULL,
      project_id ${T} NOT NULL,
      host ${T} NOT NULL,
      state ${T} NOT NULL,
      task_state ${T},
      updated_at ${T} NOT NULL,
      user_id ${T},
      created_at ${T},
      image_ref ${T},
      flavor_ref ${T},
      metadata ${T},
      fault ${T},
      vcpus INTEGER,
      memory_mb INTEGER,
      discovered_at ${T}
    );
    CREATE INDEX servers_by_name ON servers (name, id);
    CREATE INDEX servers_project_by_name ON servers (project_id, name, id);
    CREATE INDEX servers_host_id ON servers (host, id);
    CREATE TABLE attachments (
      server_id ${T} NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
      volume_id ${T} NOT NULL,
      device ${T} NOT NULL,
      kind ${T} NOT NULL,
      format ${T},
      source ${T},
      readonly INTEGER NOT NULL DEFAULT 0,
      PRIMARY KEY (server_id, volume_id)
    );
    CREATE TABLE instance_actions (
      request_id ${T} NOT NULL,
      server_id ${T} NOT NULL,
      action ${T} NOT NULL,
      event ${T} NOT NULL,
      user_id ${T} NOT NULL,
      project_id ${T} NOT NULL,
      start_time ${T} NOT NULL,
      finish_time ${T},
      result ${T},
      message ${T},
      details ${T} NOT NULL DEFAULT '{}',
      PRIMARY KEY (server_id, request_id)
    );
    CREATE TABLE tokens (
      hash ${T} PRIMARY KEY,
      user_id ${T} NOT NULL,
      project_id ${T} NOT NULL,
      roles ${T} NOT NULL,
      created_at ${T} NOT NULL,
      expires_at ${T} NOT NULL
    );
    CREATE INDEX tokens_user ON tokens (user_id);
    CREATE TABLE volumes (
      id ${T} PRIMARY KEY,
      project_id ${T} NOT NULL,
      name ${T} NOT NULL,
      size_bytes BIGINT NOT NULL,
      status ${T} NOT NULL,
      backend ${T} NOT NULL,
      format ${T},
      server_id ${T},
      server_project_id ${T},
      device ${T},
      extend ${T},
      created_at ${T} NOT NULL,
      updated_at ${T} NOT NULL,
      version BIGINT NOT NULL DEFAULT 0,
      user_id ${T},
      description ${T},
      metadata ${T},
      attached_at ${T}
    );
    CREATE INDEX volumes_status ON volumes (status);
    CREATE INDEX volumes_by_created ON volumes (created_at, id);
    CREATE INDEX volumes_project_by_created ON volumes (project_id, created_at, id);
    CREATE INDEX volumes_by_name ON volumes (name);
    CREATE TABLE volume_actions (
      request_id ${T} NOT NULL,
      volume_id ${T} NOT NULL,
      action ${T} NOT NULL,
      user_id ${T} NOT NULL,
      project_id ${T} NOT NULL,
      start_time ${T} NOT NULL,
      finish_time ${T},
      result ${T},
      message ${T},
      compute_request_ids ${T} NOT NULL DEFAULT '[]',
      details ${T} NOT NULL DEFAULT '{}',
      PRIMARY KEY (volume_id, request_id)
    );
    CREATE TABLE meta (key ${T} PRIMARY KEY, value ${T} NOT NULL);
    INSERT INTO meta (key, value) VALUES ('database_id', replace(gen_random_uuid()::text, '-', ''));
    CREATE TABLE users (
      id ${T} PRIMARY KEY,
      name ${T} NOT NULL UNIQUE,
      project_id ${T} NOT NULL,
      roles ${T} NOT NULL,
      password_hash ${T} NOT NULL,
      created_at ${T} NOT NULL,
      updated_at ${T} NOT NULL
    );
    CREATE TABLE token_auth (
      hash ${T} PRIMARY KEY REFERENCES tokens (hash) ON DELETE CASCADE,
      methods ${T} NOT NULL,
      audit_ids ${T} NOT NULL
    );
    CREATE TABLE flavors (
      id ${T} PRIMARY KEY,
      name ${T} NOT NULL,
      vcpus INTEGER NOT NULL,
      ram_mb INTEGER NOT NULL,
      disk_gb INTEGER NOT NULL,
      ephemeral_gb INTEGER NOT NULL DEFAULT 0,
      swap_mb INTEGER NOT NULL DEFAULT 0,
      is_public INTEGER NOT NULL DEFAULT 1,
      description ${T}
    );
    CREATE TABLE images (
      id ${T} PRIMARY KEY,
      name ${T} NOT NULL,
      kind ${T} NOT NULL,
      disk_path ${T},
      disk_format ${T},
      kernel_path ${T},
      ramdisk_path ${T},
      cmdline ${T},
      min_disk_gb INTEGER NOT NULL DEFAULT 0,
      min_ram_mb INTEGER NOT NULL DEFAULT 0,
      created_at ${T} NOT NULL
    );
    CREATE TABLE services (
      id INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
      host ${T} NOT NULL,
      "binary" ${T} NOT NULL,
      topic ${T} NOT NULL,
      disabled INTEGER NOT NULL DEFAULT 0,
      disabled_reason ${T},
      created_at ${T} NOT NULL,
      updated_at ${T} NOT NULL,
      UNIQUE (host, "binary")
    );
    CREATE TABLE extend_leases (
      volume_id ${T} PRIMARY KEY REFERENCES volumes (id) ON DELETE CASCADE,
      owner ${T} NOT NULL,
      expires_at ${T} NOT NULL
    );
    CREATE INDEX extend_leases_owner ON extend_leases (owner);
    `,
  },
  {
    // 12 (H): what each extend did about the guest's filesystem (SQLite's migration 12).
    version: 12,
    sql: `
    CREATE TABLE volume_fs_growths (
      volume_id ${T} NOT NULL REFERENCES volumes (id) ON DELETE CASCADE,
      request_id ${T} NOT NULL,
      requested INTEGER NOT NULL,
      grown INTEGER,
      reason ${T},
      device ${T},
      partition_grown INTEGER,
      fs_type ${T},
      mountpoint ${T},
      fs_bytes_before BIGINT,
      fs_bytes BIGINT,
      requested_at ${T} NOT NULL,
      finished_at ${T},
      PRIMARY KEY (volume_id, request_id)
    );
    CREATE INDEX volume_fs_growths_latest ON volume_fs_growths (volume_id, requested_at, request_id);
    `,
  },
  {
    // 13 (H): encrypted volumes, as SQLite's 13.
    version: 13,
    sql: `
    ALTER TABLE volumes ADD COLUMN encryption ${T};
    ALTER TABLE volumes ADD COLUMN payload_offset BIGINT;
    ALTER TABLE volumes ADD COLUMN encryption_key ${T};
    `,
  },
];

/** The schema version this build knows (the last migration's). */
export const PG_SCHEMA_VERSION = PG_MIGRATIONS.at(-1)!.version;
