/**
 * The persistence contract. SQLite (embedded, the default, db/sqlite.ts) and PostgreSQL (scale-out,
 * db/postgres/) implement it. One contract suite (test/contract/store.contract.ts)
 * runs against every implementation. Methods are async so a networked store fits.
 */
import type { DiskKind, GuestFsNotGrownReason, ServerState } from '../virt/driver.js';
import type { ExtendStep } from '../volume/extend/stepNames.js';

/**
 * A volume attached to a server, as the compute store records it from the driver's `DriverDisk` (device e.g. `vdb`;
 * `source` is a host path or `iqn/lun`, not part of the API views).
 */
export interface AttachmentRecord {
  serverId: string;
  volumeId: string;
  device: string;
  kind: DiskKind;
  format?: 'raw' | 'qcow2';
  source?: string;
  readonly: boolean;
}

/** A server of the compute host's inventory (Nova's instance), with its attachments; `updatedAt` is ISO 8601. */
export interface ServerRecord {
  id: string;
  name: string;
  projectId: string;
  host: string;
  state: ServerState;
  /** A task in progress (Nova's task_state), e.g. `migrating`; null when idle. */
  taskState: string | null;
  updatedAt: string;
  attachments: AttachmentRecord[];
  /** Who created it (POST /servers); absent for a domain found on the host. */
  userId?: string;
  /** When it was created (ISO 8601); absent for a domain found on the host (then `discoveredAt` stands in). */
  createdAt?: string;
  /** When the inventory first saw a domain found on the host (ISO 8601); absent for servers made through POST /servers. */
  discoveredAt?: string;
  /** The image (ImageRecord.id) it was built from; absent or null for a domain found on the host. */
  imageRef?: string | null;
  /** The flavor (FlavorRecord.id) it was built with; absent or null for a domain found on the host. */
  flavorRef?: string | null;
  /** Nova's server metadata (string → string). */
  metadata?: Record<string, string>;
  /** Why its build failed (vm state `error`), as Nova's instance fault; absent otherwise. */
  fault?: ServerFault;
  /** vCPUs the hypervisor reports the server has (DriverServer.vcpus); absent when not measured. */
  vcpus?: number;
  /** Memory in MiB the hypervisor reports (DriverServer.memoryMb); absent when not measured. */
  memoryMb?: number;
}

/** Nova's instance fault: the HTTP-like code, the public message and when it happened (ISO 8601). */
export interface ServerFault {
  code: number;
  message: string;
  created: string;
}

/** A server compute builds (POST /servers), as `createServer` inserts it: vm state `building`. */
export type NewServerRecord = Required<Pick<ServerRecord, 'id' | 'name' | 'projectId' | 'userId' | 'createdAt' | 'imageRef' | 'flavorRef' | 'metadata'>> & {
  /** The build's first task state (Nova's `scheduling`). */
  taskState: string;
};

/** What `setServerState` writes: vm state, task state and (null: none) the fault, together. */
export interface ServerStatePatch {
  state: ServerState;
  taskState: string | null;
  fault?: ServerFault | null;
}

/**
 * The flavor id the compute API shows for a server found on the host (no flavorRef: its size was
 * defined on the host). Reserved: no registered flavor may take it (the CLI refuses it).
 */
export const HOST_DEFINED_FLAVOR = 'host-defined';

/** A flavor (Nova's): the size of a server. Units as Nova's API: RAM and swap in MiB, disks in GiB. */
export interface FlavorRecord {
  id: string;
  name: string;
  vcpus: number;
  ramMb: number;
  diskGb: number;
  ephemeralGb: number;
  swapMb: number;
  isPublic: boolean;
  description: string | null;
}

/**
 * An image (Glance's) a server boots from: a disk image, or a kernel and ramdisk pair (as Glance
 * images with `kernel_id`/`ramdisk_id` properties). Paths are host paths (never sent to clients).
 */
export interface ImageRecord {
  id: string;
  name: string;
  /** `disk`: `diskPath` is the boot disk (qcow2 or raw, copied per server); `kernel`: boots `kernelPath` with `ramdiskPath`. */
  kind: 'disk' | 'kernel';
  diskPath: string | null;
  diskFormat: 'qcow2' | 'raw' | null;
  kernelPath: string | null;
  ramdiskPath: string | null;
  /** Kernel command line for `kernel` images. */
  cmdline: string | null;
  minDiskGb: number;
  minRamMb: number;
  createdAt: string;
}

/** How an instance action or volume action ended (Nova's instance action event results). */
export type ActionResult = 'Success' | 'Error';

/** One Nova instance action (`os-instance-actions`) with its one event; times are ISO 8601, `finishTime` null while it runs. */
export interface InstanceActionRecord {
  requestId: string;
  serverId: string;
  /** Nova's action name, e.g. `online_extend_volume`. */
  action: string;
  /** The event inside the action, e.g. `compute_assist_extend`. */
  event: string;
  userId: string;
  projectId: string;
  startTime: string;
  finishTime: string | null;
  result: ActionResult | null;
  /** Error message, or a short summary of what was done. */
  message: string | null;
  /** Structured details (volume id, bytes requested and measured, ...). */
  details: Record<string, unknown>;
}

/**
 * One page of a listing, keyset-paged as Nova's and Cinder's `limit` and `marker`: the items
 * after `marker`, in the listing's order. The store pages in SQL on an index, so a page costs
 * the same whatever the listing's length. Callers apply their own default and maximum `limit`;
 * to learn whether more items follow, ask for one more than you show.
 */
export interface PageQuery {
  /** At most this many items (0 or more). */
  limit: number;
  /**
   * The id of the last item of the previous page (a server id, volume id or request id); the
   * page starts after it. A marker that is not in the listing throws MarkerNotFound (400).
   */
  marker?: string | undefined;
}

/** What `syncServers` wrote: only servers whose record or attachments changed are written. */
export interface InventorySyncResult {
  /** Servers new in the store (or moved here from another host). */
  added: number;
  /** Servers whose name, project, state or attachments changed. */
  updated: number;
  /** Servers of this host gone from the inventory. */
  removed: number;
  /** Servers left untouched: nothing about them changed. */
  unchanged: number;
}

/** A stored token (see auth/tokens.ts); times are ISO 8601. */
export interface TokenRecord {
  /** sha256 of the token, hex. The token itself is never stored. */
  hash: string;
  userId: string;
  projectId: string;
  roles: string[];
  createdAt: string;
  expiresAt: string;
}

/**
 * The compute service's persistence: the host's server inventory, instance actions and tokens. Paging with a marker not in
 * the listing throws MarkerNotFound (400); other failures are the implementation's own (SqliteStore: better-sqlite3's errors).
 */
export interface ComputeStore {
  /**
   * Make the store's inventory of `host` equal `servers`: servers gone from the host are removed,
   * task states are kept. By difference: only servers whose record or attachments changed are
   * written (their `updatedAt` moves; an unchanged server's does not), in small transactions
   * that let other work run between them. A reader may see a sync half applied, never a server
   * half written.
   */
  syncServers(host: string, servers: Array<Omit<ServerRecord, 'updatedAt' | 'taskState' | 'host'>>): Promise<InventorySyncResult>;
  /**
   * One server of `host` as the hypervisor reports it now (a targeted sync, for a server the
   * store may not know yet or whose state is stale): written only if its record or attachments
   * differ from what the store holds, as `syncServers` does; its task state is kept; a server
   * recorded on another host moves to `host`. Inventory writes (`syncServers`, `upsertServer`,
   * `removeServer`) apply one after another in the order they were called, so a single-server
   * write never lands inside a sync, and what a later sync compares against includes it.
   * Answers what it did: `added` (new here, or moved here), `updated`, or `unchanged`.
   */
  upsertServer(host: string, server: Omit<ServerRecord, 'updatedAt' | 'taskState' | 'host'>): Promise<'added' | 'updated' | 'unchanged'>;
  /**
   * Remove a server `host` no longer has, with its attachments, only if it is recorded on `host`
   * (another host's server is left alone). Ordered as `upsertServer`. True if it was removed.
   */
  removeServer(host: string, serverId: string): Promise<boolean>;
  getServer(id: string): Promise<ServerRecord | undefined>;
  /**
   * The server as `getServer` would answer it, when the store has it in memory (no I/O, no
   * promise: the read hot path, get_blockdev); undefined when it would have to ask the database
   * (then call getServer). Optional: a store without such a cache leaves it out.
   */
  cachedServer?(id: string): ServerRecord | undefined;
  /** Servers by name, then id. `page.marker` is a server id. Without `page`, all of them. */
  listServers(filter?: { projectId?: string }, page?: PageQuery): Promise<ServerRecord[]>;
  /** Conditional update of task_state: only if the current value equals `expected`. True if applied. */
  setTaskState(serverId: string, task: string | null, expected: string | null): Promise<boolean>;

  // Servers compute builds itself (POST /servers). Such a server is compute's record before it is
  // the hypervisor's: while it is `building` or in `error` (a failed build leaves no domain) and
  // the host does not list it, `syncServers` and `removeServer` keep it; `deleteServer` removes
  // it. Inventory writes never touch the creation fields (user, created, image, flavor,
  // metadata, fault).

  /** Insert a server being built on `host` (vm state `building`). False if the id is taken. Ordered as `upsertServer`. */
  createServer(host: string, server: NewServerRecord): Promise<boolean>;
  /**
   * Conditional update of a server's vm state, task state and fault in one write: only if its
   * task state is `expectedTask` (a build's steps, its end or failure; a delete). True if applied.
   */
  setServerState(serverId: string, patch: ServerStatePatch, expectedTask: string | null): Promise<boolean>;
  /** Remove a server and its attachments whatever its host or state (a delete done). True if it existed. */
  deleteServer(serverId: string): Promise<boolean>;

  /** Store a flavor; false (nothing written) if its id is taken. */
  putFlavor(flavor: FlavorRecord): Promise<boolean>;
  getFlavor(id: string): Promise<FlavorRecord | undefined>;
  /** Every flavor, by RAM, then id (Nova lists by flavorid; ours are names or UUIDs). */
  listFlavors(): Promise<FlavorRecord[]>;
  /** True if it existed. Servers built with it keep its id (Nova shows a deleted flavor as `{}`). */
  deleteFlavor(id: string): Promise<boolean>;
  /** Store an image; false (nothing written) if its id is taken. */
  putImage(image: ImageRecord): Promise<boolean>;
  getImage(id: string): Promise<ImageRecord | undefined>;
  /** Every image, oldest first (created_at, then id). */
  listImages(): Promise<ImageRecord[]>;
  /** True if it existed. Servers built from it keep their own copy of its disk. */
  deleteImage(id: string): Promise<boolean>;

  startAction(action: Omit<InstanceActionRecord, 'finishTime' | 'result'>): Promise<void>;
  finishAction(requestId: string, serverId: string, result: ActionResult, message: string | null, details?: Record<string, unknown>): Promise<void>;
  /** Record a whole action at once (start and finish). */
  recordAction(action: InstanceActionRecord): Promise<void>;
  /**
   * The server's actions, newest first: by request id, descending (the service's request ids are
   * time-ordered). `page.marker` is a request id. Without `page`, all of them.
   */
  listActions(serverId: string, page?: PageQuery): Promise<InstanceActionRecord[]>;
  getAction(serverId: string, requestId: string): Promise<InstanceActionRecord | undefined>;
  /**
   * Every action named `action` that has no finish time yet, oldest first (by request id): at
   * start-up, what a process that died left under way. Reads the whole table (no index): for
   * start-up only.
   */
  listUnfinishedActions(action: string): Promise<InstanceActionRecord[]>;

  putToken(token: TokenRecord): Promise<void>;
  getToken(hash: string): Promise<TokenRecord | undefined>;
  /** Tokens (expired ones too), oldest first, optionally of one user and/or project. */
  listTokens(filter?: { userId?: string; projectId?: string }): Promise<TokenRecord[]>;
  /** Revoke one token. True if it existed. */
  deleteToken(hash: string): Promise<boolean>;
  /** Remove every token whose expiry is at or before `now` (default: the current time). Returns how many. */
  deleteExpiredTokens(now?: Date): Promise<number>;

  // Compute services (Nova's `services` table): each compute agent reports it is alive; the API
  // routes calls only to hosts whose heartbeat is recent and lists them in os-services.

  /**
   * A heartbeat of the service `binary` (e.g. `nova-compute`) on `host`: creates its row the
   * first time (a new stable `id`, `createdAt` = `now`), else sets `updatedAt` = `now`. Answers
   * the row as stored. `now` defaults to the current time (the agent's clock, as Nova's).
   */
  serviceHeartbeat(host: string, binary: string, topic: string, now?: Date): Promise<ServiceRecord>;
  /** Services by id, optionally of one host and/or binary. */
  listServices(filter?: { host?: string; binary?: string }): Promise<ServiceRecord[]>;
  /** Disable or enable a service (Nova's os-services disable/enable). False if no such service. */
  setServiceDisabled(host: string, binary: string, disabled: boolean, reason: string | null): Promise<boolean>;
  /** Remove a service's row (Nova's DELETE os-services/{id}). True if it existed. */
  deleteService(id: number): Promise<boolean>;
}

/** One compute service as Nova's `services` row; times ISO 8601. "Up" is decided by the reader (updatedAt within service_down_time). */
export interface ServiceRecord {
  /** Stable integer id (Nova's `id`). */
  id: number;
  host: string;
  /** `nova-compute` for the compute agents (what clients filter on). */
  binary: string;
  /** RPC topic, `compute`. */
  topic: string;
  disabled: boolean;
  disabledReason: string | null;
  /** Last heartbeat. */
  updatedAt: string;
  createdAt: string;
}

/** A volume's status, as Cinder's (`in-use` while attached, `error_extending` when an extend failed). */
export type VolumeStatus =
  | 'creating'
  | 'available'
  | 'attaching'
  | 'in-use'
  | 'detaching'
  | 'extending'
  | 'error_extending'
  | 'error'
  | 'deleting';

/**
 * A step of the extend workflow; the steps, their order and what each does live with the
 * workflow (volume/extend/stepNames.ts, steps.ts). A type-only import: the store holds the name, it decides nothing.
 */
export type { ExtendStep };

/** The extend in progress on a volume (Cinder's extend, driven by the workflow in volume/extend/); sizes in bytes, times ISO 8601. */
export interface ExtendState {
  requestId: string;
  targetBytes: number;
  /** The next step to run: everything before it is done. */
  step: ExtendStep;
  startedAt: string;
  /** The workflow gives up (error_extending) after this time. */
  deadline: string;
  attempts: number;
  /** Last size the compute host reported, for progress. */
  hostBytes: number | null;
  /** The guest-visible size compute measured after assist_extend. */
  measuredBytes?: number;
  /** Why it failed, and at which step (error_extending only). */
  error: string | null;
  /**
   * `online`: the guest is resized live; `offline`: its server is stopped (the guest sees the size
   * at next start); `detached`: no server, the storage alone grows (volume/extend/workflow.ts).
   */
  mode?: 'online' | 'offline' | 'detached';
  /** The storage size measured after the storage step (a retry may not ask for less). */
  storageBytes?: number;
  /** The last uncertain error while retrying, kept so a deadline reports the real cause. */
  lastError?: { step: ExtendStep; code: string; message: string; at: string } | null;
  /** Catalogue code of the error that ended the extend (error_extending only). */
  errorCode?: string | null;
  /**
   * The extend grows the guest's filesystem after the block extend (the grow_fs step): asked by
   * os-extend's `online_extend:grow_fs` or the volume's metadata key of that name. Absent: no.
   */
  growFs?: boolean;
}

/** A Cinder volume as stored; `sizeBytes` is the size in bytes (the API shows GiB rounded down too); times ISO 8601. */
export interface VolumeRecord {
  id: string;
  projectId: string;
  name: string;
  sizeBytes: number;
  status: VolumeStatus;
  /** Backend name: `file`, `block` or `iscsi`. */
  backend: string;
  format: 'raw' | 'qcow2' | null;
  serverId: string | null;
  /** Project of the server it is attached to (the tenant in compute URLs). */
  serverProjectId: string | null;
  device: string | null;
  extend: ExtendState | null;
  /** Incremented by every update: a conditional update may require the version it read. */
  version: number;
  createdAt: string;
  updatedAt: string;
  /** Who created it (Cinder's user_id); absent or null on volumes made before it was recorded. */
  userId?: string | null;
  /** Cinder's description; absent or null when none was given. */
  description?: string | null;
  /** Cinder's volume metadata (string → string); absent means none. */
  metadata?: Record<string, string>;
  /** When its attachment was made (ISO 8601); null or absent while it has none. */
  attachedAt?: string | null;
  /** Its encryption (QEMU-native LUKS, Cinder's encrypted volume type); null or absent: none. */
  encryption?: 'luks' | null;
  /**
   * Bytes of the LUKS header before the payload, read from the header once the backend made it;
   * the guest sees `sizeBytes - payloadOffset`. Null or absent when unencrypted (or not made yet).
   */
  payloadOffset?: number | null;
}

/**
 * The condition of a conditional update (Cinder's conditional_update): every field given must
 * hold at the moment the update applies, in the same statement, or nothing changes.
 */
export interface VolumeGuard {
  /** The status must be one of these. */
  status?: readonly VolumeStatus[];
  /** The record must still be at this version (nothing changed since it was read). */
  version?: number;
  /** true: the volume must have an attachment; false: it must have none. */
  attached?: boolean;
  /** The recorded size must be strictly below this (an extend's target). */
  sizeBelow?: number;
  /** The extend in the record must still be this one (its request id). */
  extendRequestId?: string;
}

/** One Cinder-side volume action (create, extend, attach, ...) and the compute calls it made; times ISO 8601. */
export interface VolumeActionRecord {
  requestId: string;
  volumeId: string;
  action: string;
  userId: string;
  projectId: string;
  startTime: string;
  finishTime: string | null;
  result: ActionResult | null;
  message: string | null;
  /** Request ids of the compute API calls this action caused. */
  computeRequestIds: string[];
  details: Record<string, unknown>;
}

/**
 * Why a guest filesystem was not grown: the driver's reasons (virt/driver.ts GuestFsNotGrownReason)
 * and the volume service's own: `not_supported` (the host's driver cannot grow filesystems),
 * `server_stopped` (the extend went offline: no guest runs to grow it), `detached` (no server).
 */
export type FsGrowthReason = GuestFsNotGrownReason | 'not_supported' | 'server_stopped' | 'detached';

/**
 * What one extend did about the guest's filesystem (migration 12): whether it was asked to grow
 * it, and the outcome of the workflow's grow_fs step as the guest reported it. Never the
 * operator-only detail text. Sizes in bytes (df's total), times ISO 8601.
 */
export interface FsGrowthRecord {
  volumeId: string;
  /** The extend's request id. */
  requestId: string;
  /** The extend asked for it (os-extend's `online_extend:grow_fs`, or the volume's metadata key). */
  requested: boolean;
  /** The filesystem fills the grown disk (true), was not grown (false, with `reason`), or the step has not finished or did not run (null). */
  grown: boolean | null;
  reason: FsGrowthReason | null;
  /** Guest block device grown, e.g. `/dev/vdb1`. */
  device: string | null;
  partitionGrown: boolean | null;
  fsType: string | null;
  mountpoint: string | null;
  fsBytesBefore: number | null;
  fsBytes: number | null;
  /** When the extend started (the records' order). */
  requestedAt: string;
  /** When grow_fs finished; null until then, and when it was not asked for. */
  finishedAt: string | null;
}

/**
 * The volume service's persistence: volumes (updated by compare-and-swap) and their actions.
 * Paging with a marker not in the listing throws MarkerNotFound (400).
 */
export interface VolumeStore {
  /**
   * `secret.encryptionKey`: an encrypted volume's passphrase, stored with it in the same row
   * (deleted with it) and never part of a VolumeRecord: only `getVolumeEncryptionKey` reads it.
   */
  createVolume(v: Omit<VolumeRecord, 'createdAt' | 'updatedAt' | 'version'>, secret?: { encryptionKey?: string }): Promise<void>;
  getVolume(id: string): Promise<VolumeRecord | undefined>;
  /** The passphrase `createVolume` stored for the volume; undefined for an unencrypted or unknown volume. */
  getVolumeEncryptionKey(id: string): Promise<string | undefined>;
  /** Volumes oldest first (created_at, then id), optionally of one project, status and exact name. `page.marker` is a volume id. Without `page`, all of them. */
  listVolumes(filter?: { projectId?: string; status?: VolumeStatus; name?: string }, page?: PageQuery): Promise<VolumeRecord[]>;
  /** How many volumes have each status (statuses no volume has are absent); one grouped count, for the metrics scrape. */
  countVolumesByStatus(): Promise<Partial<Record<VolumeStatus, number>>>;
  /**
   * Conditional update: applies `patch` only while `guard` holds (a status list is shorthand for
   * `{ status }`), in one statement (a compare-and-swap, as Cinder's conditional update). Bumps
   * the version. True if applied.
   */
  updateVolume(id: string, guard: readonly VolumeStatus[] | VolumeGuard, patch: Partial<Omit<VolumeRecord, 'id' | 'createdAt' | 'updatedAt' | 'version'>>): Promise<boolean>;
  deleteVolume(id: string): Promise<void>;

  startVolumeAction(a: Omit<VolumeActionRecord, 'finishTime' | 'result'>): Promise<void>;
  /** Append compute request ids and merge details while the action runs. */
  noteVolumeAction(requestId: string, volumeId: string, computeRequestIds: string[], details?: Record<string, unknown>): Promise<void>;
  finishVolumeAction(requestId: string, volumeId: string, result: ActionResult, message: string | null): Promise<void>;
  /** The volume's actions, newest first by request id as `listActions`. `page.marker` is a request id. Without `page`, all of them. */
  listVolumeActions(volumeId: string, page?: PageQuery): Promise<VolumeActionRecord[]>;

  /**
   * Record (or replace) what an extend did about the guest's filesystem, by (volumeId, requestId).
   * `onlyIfAbsent`: keep a record already there (the extend's start must never overwrite an
   * outcome a fast run already wrote). Removed with its volume.
   */
  putFsGrowth(r: FsGrowthRecord, opts?: { onlyIfAbsent?: boolean }): Promise<void>;
  /** One extend's record, or undefined. */
  getFsGrowth(volumeId: string, requestId: string): Promise<FsGrowthRecord | undefined>;
  /** The newest record (by requestedAt, then requestId) of each of `volumeIds` that has one, in one query. */
  latestFsGrowths(volumeIds: readonly string[]): Promise<Map<string, FsGrowthRecord>>;

  // Extend leases (G): several workflow workers share one database; each extend is driven by
  // exactly one of them at a time, and a dead worker's extend is taken over once its lease ends.
  // A lease lives in its own table, not in the volume row, so renewing it never bumps the
  // volume's version (which conditional updates compare).

  /**
   * Claim or renew the lease on the extend of `volumeId` for `owner` until `now + ttlMs`, in one
   * statement: granted only while the volume is `extending` and the lease is free, expired at
   * `now`, or already `owner`'s. True if `owner` holds it after the call.
   */
  claimExtend(volumeId: string, owner: string, ttlMs: number, now?: Date): Promise<boolean>;
  /** Renew every lease `owner` holds that has not expired at `now`; answers the volume ids it still holds. */
  renewExtendLeases(owner: string, ttlMs: number, now?: Date): Promise<string[]>;
  /** Give up `owner`'s lease on a volume's extend (its run ended, or the worker stops); no-op if not held. */
  releaseExtend(volumeId: string, owner: string): Promise<void>;
  /** Ids of `extending` volumes whose lease is free or expired at `now`, oldest first, at most `limit`: what a worker may take over. */
  listClaimableExtends(now?: Date, limit?: number): Promise<string[]>;
}

/** The whole store both services share in one process (SqliteStore implements it); `close` releases the database. */
export type Store = ComputeStore & VolumeStore & {
  close(): Promise<void>;
};

/**
 * A user of the embedded Keystone (identity/): one project, its roles there, and a password kept
 * only as a KDF hash (identity/password.ts). Projects have no table: a project's name is its id,
 * and every user and project is in Keystone's `default` domain (`Default`). Times are ISO 8601.
 */
export interface UserRecord {
  /** Keystone-style id: 32 lowercase hex digits, made once when the user is created. */
  id: string;
  /** Unique; what `--os-username` names. */
  name: string;
  projectId: string;
  roles: string[];
  /** `scrypt$N=…,r=…,p=…$<salt>$<hash>` (identity/password.ts): never the password itself. */
  passwordHash: string;
  createdAt: string;
  updatedAt: string;
}

/** How a token was obtained (the embedded Keystone's `methods` and `audit_ids`), kept beside its TokenRecord. */
export interface TokenAuthRecord {
  /** The token's hash (TokenRecord.hash); the row goes when the token does. */
  hash: string;
  /** Keystone's auth methods, e.g. `["password"]`. */
  methods: string[];
  /** The token's own audit id first, then, when it was made from another token, its chain's (Keystone's audit_chain_id: the first token's audit id). */
  auditIds: string[];
}

/** The embedded Keystone's users (identity/), beside the tokens of ComputeStore. */
export interface UserStore {
  /** Add a user. Throws a plain Error when the name or id is taken. */
  createUser(user: UserRecord): Promise<void>;
  /** Replace the project, roles and password hash of the user `user.id` (its name and creation time stay). True if it existed. */
  updateUser(user: Pick<UserRecord, 'id' | 'projectId' | 'roles' | 'passwordHash' | 'updatedAt'>): Promise<boolean>;
  getUserByName(name: string): Promise<UserRecord | undefined>;
  getUserById(id: string): Promise<UserRecord | undefined>;
  /** Every user, by name. */
  listUsers(): Promise<UserRecord[]>;
  /** True if it existed. Its tokens are the caller's to revoke. */
  deleteUser(id: string): Promise<boolean>;
  /** Record how the stored token `auth.hash` was obtained; removed with the token. */
  putTokenAuth(auth: TokenAuthRecord): Promise<void>;
  getTokenAuth(hash: string): Promise<TokenAuthRecord | undefined>;
}
