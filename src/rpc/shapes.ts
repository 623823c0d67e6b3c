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
