/**
 * The shapes that cross the RPC boundary between compute and the volume service, as TypeBox
 * schemas (the compute side validates request bodies with them; the types come from the same
 * objects). Neither service imports the other: both import these.
 *
 * Wire names are camelCase where they mirror our driver's contract (a connection is exactly what
 * the virt driver's `AttachSpec` takes, so compute passes it on unchanged) and Nova's spelling
 * where they mirror Nova's API (`OS-EXT-STS:vm_state`).
 */
import { Type, type Static } from '@sinclair/typebox';

/**
 * A server's state (Nova's vm_state, lower case), as compute last saw it. The virt driver's
 * `ServerState` is the same union; compute's routes hand a server's state over as this type, so
 * tsc checks that the two stay equal.
 */
export type ServerState = 'active' | 'paused' | 'shutoff' | 'suspended' | 'crashed' | 'building' | 'migrating' | 'error' | 'unknown';

/** How Nova's API shows a server in one of our states: `OS-EXT-STS:vm_state`, `OS-EXT-STS:power_state` and `status`. */
export interface NovaServerState {
  vmState: string;
  powerState: number;
  status: string;
}

/**
 * Each ServerState as Nova shows it (nova/compute/vm_states.py, power_state.py, and the status
 * map of nova/api/openstack/common.py): shutoff is vm_state `stopped` (status SHUTOFF), a
 * crashed guest is `error` with power state CRASHED, a migrating one is `active` with status
 * MIGRATING, and a state the driver could not name is `error` with NOSTATE and status UNKNOWN.
 * One row per state and no two rows alike, so compute's view can be read back
 * (`serverStateFromNova`) by the volume service.
 */
export const NOVA_SERVER_STATES: Readonly<Record<ServerState, NovaServerState>> = {
  active: { vmState: 'active', powerState: 1, status: 'ACTIVE' },
  paused: { vmState: 'paused', powerState: 3, status: 'PAUSED' },
  shutoff: { vmState: 'stopped', powerState: 4, status: 'SHUTOFF' },
  suspended: { vmState: 'suspended', powerState: 7, status: 'SUSPENDED' },
  crashed: { vmState: 'error', powerState: 6, status: 'ERROR' },
  building: { vmState: 'building', powerState: 0, status: 'BUILD' },
  migrating: { vmState: 'active', powerState: 1, status: 'MIGRATING' },
  error: { vmState: 'error', powerState: 0, status: 'ERROR' },
  unknown: { vmState: 'error', powerState: 0, status: 'UNKNOWN' },
};

/** The ServerState a Nova server view shows (vm_state, power_state, status; see NOVA_SERVER_STATES); `unknown` for any other combination. */
export function serverStateFromNova(view: { vmState: string; powerState: number; status: string }): ServerState {
  for (const [state, nova] of Object.entries(NOVA_SERVER_STATES) as Array<[ServerState, NovaServerState]>) {
    if (nova.vmState === view.vmState && nova.powerState === view.powerState && nova.status === view.status) return state;
  }
  return 'unknown';
}

/**
 * How the compute host reaches a volume (Cinder's connection_info), as the volume service's
 * backend describes it: `kind` file (QEMU opens a file), block (a host block device) or network
 * (iSCSI, `source` is `iqn/lun` and `portal` the target's address); `device` the guest device
 * name asked for (`vdc`), compute picks the next free one if absent.
 */
export const ConnectionInfo = Type.Object(
  {
    volumeId: Type.String({ minLength: 1, maxLength: 255 }),
    kind: Type.Union([Type.Literal('file'), Type.Literal('block'), Type.Literal('network')]),
    format: Type.Optional(Type.Union([Type.Literal('raw'), Type.Literal('qcow2')])),
    source: Type.String({ minLength: 1, maxLength: 4096 }),
    portal: Type.Optional(Type.String({ maxLength: 255 })),
    device: Type.Optional(Type.String({ pattern: '^vd[a-z]{1,2}$' })),
    // An encrypted volume's format and passphrase (AttachEncryption in src/virt/driver.ts).
    encryption: Type.Optional(
      Type.Object({ format: Type.Literal('luks'), passphrase: Type.String({ minLength: 1, maxLength: 1024 }) }, { additionalProperties: false }),
    ),
  },
  { additionalProperties: false },
);
/** See ConnectionInfo. */
export type ConnectionInfo = Static<typeof ConnectionInfo>;

/** Body of compute's connect call: plug `connection` into the server. */
export const ConnectBody = Type.Object({ connection: ConnectionInfo }, { additionalProperties: false });
/** See ConnectBody. */
export type ConnectBody = Static<typeof ConnectBody>;

/** Body of compute's attach check: can the server take `volumeId` (on `device`) now? */
export const CheckConnectBody = Type.Object(
  { volumeId: Type.String({ minLength: 1, maxLength: 255 }), device: Type.Optional(Type.String({ pattern: '^vd[a-z]{1,2}$' })) },
  { additionalProperties: false },
);
/** See CheckConnectBody. */
export type CheckConnectBody = Static<typeof CheckConnectBody>;

/** A volume plugged into a server: the guest device name it got (`vdc`, no `/dev/`). */
export const Connection = Type.Object({ serverId: Type.String(), volumeId: Type.String(), device: Type.String() });
/** See Connection. */
export type Connection = Static<typeof Connection>;

/** compute's answer to connect, and one entry of its list of a server's connections. */
export const ConnectionAnswer = Type.Object({ connection: Connection });
/** The server's connections as the hypervisor has them now (read fresh, not from the inventory). */
export const ConnectionsAnswer = Type.Object({ connections: Type.Array(Connection) });

/**
 * Body of the volume service's attach call (Cinder's attachment create, shaped as ours): attach
 * `volume_uuid` to `instance_uuid`, on `mountpoint` (`vdc`) if given.
 */
export const AttachmentCreateBody = Type.Object(
  {
    attachment: Type.Object(
      {
        volume_uuid: Type.String({ minLength: 1, maxLength: 255 }),
        instance_uuid: Type.String({ minLength: 1, maxLength: 255 }),
        mountpoint: Type.Optional(Type.String({ pattern: '^vd[a-z]{1,2}$' })),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);
/** See AttachmentCreateBody. */
export type AttachmentCreateBody = Static<typeof AttachmentCreateBody>;

/** Query of the volume service's detach call: the server the volume is to come off. */
export const AttachmentDeleteQuery = Type.Object({ instance_uuid: Type.String({ minLength: 1, maxLength: 255 }) }, { additionalProperties: false });
/** See AttachmentDeleteQuery. */
export type AttachmentDeleteQuery = Static<typeof AttachmentDeleteQuery>;

/** The volume service's answer to attach: the attachment (`device` without `/dev/`). */
export const AttachmentAnswer = Type.Object({ attachment: Connection });

/**
 * What compute's grow-filesystem call answers (the virt driver's GuestFilesystemGrowth, camelCase
 * as its contract, without the operator-only `detail`): whether the guest's filesystem on the
 * volume's disk now fills it, or why not; sizes in bytes (df's total).
 */
export const GuestFilesystemGrowth = Type.Object({
  grown: Type.Boolean(),
  reason: Type.Optional(
    Type.Union(
      [
        Type.Literal('no_guest_agent'),
        Type.Literal('disk_not_found'),
        Type.Literal('no_filesystem'),
        Type.Literal('unsupported_filesystem'),
        Type.Literal('not_mounted'),
        Type.Literal('grow_failed'),
      ],
      { description: 'Why it was not grown (grown false)' },
    ),
  ),
  device: Type.Optional(Type.String({ description: 'Guest block device grown, e.g. /dev/vdb1' })),
  partitionGrown: Type.Optional(Type.Boolean()),
  fsType: Type.Optional(Type.String()),
  mountpoint: Type.Optional(Type.String()),
  fsBytesBefore: Type.Optional(Type.Integer({ minimum: 0 })),
  fsBytes: Type.Optional(Type.Integer({ minimum: 0 })),
});
/** compute's answer to the grow-filesystem call. */
export const GuestFilesystemAnswer = Type.Object({ growth: GuestFilesystemGrowth });
/** See GuestFilesystemAnswer. */
export type GuestFilesystemAnswer = Static<typeof GuestFilesystemAnswer>;
