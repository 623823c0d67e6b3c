/**
 * A minimal image API (Glance v2's reads) on its own port, so that clients that look images up
 * in the catalog (`openstack server list/show`, tempest, openstacksdk) find the images servers
 * are built from: `GET /` and `GET /versions` (Glance's version list: 300 and 200), `GET
 * /v2/images` and `GET /v2/images/{id}`. Images are registered with the CLI (`online-extend
 * image create`); host paths never leave the service.
 *
 * Shapes as Glance's for what we have: every image is `active` and `public`; a disk image shows
 * its disk format (`qcow2`, `raw`) in a `bare` container; a kernel image (kernel + ramdisk in one
 * record) shows as `ami`. Not Glance: no kernel_id/ramdisk_id properties (our kernel image holds
 * both itself), no checksum or size (null), errors in the service's JSON fault format.
 * Not microversioned (Glance has no microversions).
 */
import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import type { App, ServerDeps } from '../../server.js';
import { authorize, inRequest } from '../../server.js';
import { errorResponses, PathId } from '../../schemas/common.js';
import type { ComputeStore, ImageRecord } from '../../../db/store.js';
import { errors } from '../../../errors.js';

const config = { unversioned: true };
const tags = ['images'];

/** The Glance v2 versions we list (the reads below are the same at all of them). */
const VERSIONS = ['2.9', '2.8', '2.7', '2.6', '2.5', '2.4', '2.3', '2.2', '2.1', '2.0'];

const VersionList = Type.Object({
  versions: Type.Array(Type.Object({ id: Type.String(), status: Type.String(), links: Type.Array(Type.Object({ rel: Type.String(), href: Type.String() })) })),
});

const ImageView = Type.Object({
  id: Type.String(),
  name: Type.String(),
  status: Type.String(),
  visibility: Type.String(),
  protected: Type.Boolean(),
  os_hidden: Type.Boolean(),
  container_format: Type.String(),
  disk_format: Type.String(),
  min_disk: Type.Integer({ description: 'GiB' }),
  min_ram: Type.Integer({ description: 'MiB' }),
  size: Type.Null(),
  virtual_size: Type.Null(),
  checksum: Type.Null(),
  os_hash_algo: Type.Null(),
  os_hash_value: Type.Null(),
  owner: Type.Null(),
  tags: Type.Array(Type.String()),
  created_at: Type.String(),
  updated_at: Type.String(),
  self: Type.String(),
  file: Type.String(),
  schema: Type.String(),
});

function baseUrl(req: FastifyRequest): string {
  return `http://${req.headers.host ?? `${req.socket.localAddress}:${req.socket.localPort}`}`;
}

function versions(req: FastifyRequest) {
  const href = `${baseUrl(req)}/v2/`;
  return { versions: VERSIONS.map((v, i) => ({ id: `v${v}`, status: i === 0 ? 'CURRENT' : 'SUPPORTED', links: [{ rel: 'self', href }] })) };
}

/** An image as Glance v2 shows it (see the module comment); timestamps without fractions, as Glance writes them. */
export function imageView(i: ImageRecord) {
  const created = i.createdAt.replace(/\.\d+Z$/, 'Z');
  return {
    id: i.id,
    name: i.name,
    status: 'active',
    visibility: 'public',
    protected: false,
    os_hidden: false,
    container_format: i.kind === 'kernel' ? 'ami' : 'bare',
    disk_format: i.kind === 'kernel' ? 'ami' : (i.diskFormat ?? 'raw'),
    min_disk: i.minDiskGb,
    min_ram: i.minRamMb,
    size: null,
    virtual_size: null,
    checksum: null,
    os_hash_algo: null,
    os_hash_value: null,
    owner: null,
    tags: [],
    created_at: created,
    updated_at: created,
    self: `/v2/images/${i.id}`,
    file: `/v2/images/${i.id}/file`,
    schema: '/v2/schemas/image',
  };
}

/** Registers the image API's routes (see the module comment). Any authenticated caller may read (`get_images`, `get_image`: `@`). */
export function registerImageApi(app: App, deps: ServerDeps & { store: ComputeStore }): void {
  const security: [] = [];
  app.get('/', { config, schema: { tags: ['versions'], security, response: { 300: VersionList } } }, async (req, reply) => reply.status(300).send(versions(req)));
  app.get('/versions', { config, schema: { tags: ['versions'], security, response: { 200: VersionList } } }, async (req) => versions(req));

  app.get(
    '/v2/images',
    {
      config,
      schema: {
        tags,
        summary: 'Every image, oldest first',
        response: { 200: Type.Object({ images: Type.Array(ImageView), schema: Type.String(), first: Type.String() }), ...errorResponses(401, 403) },
      },
    },
    async (req) => {
      await authorize(deps, req, 'get_images', {});
      return { images: (await inRequest(req, () => deps.store.listImages())).map(imageView), schema: '/v2/schemas/images', first: '/v2/images' };
    },
  );

  app.get(
    '/v2/images/:image_id',
    { config, schema: { tags, params: Type.Object({ image_id: PathId }), response: { 200: ImageView, ...errorResponses(401, 403, 404) } } },
    async (req) => {
      await authorize(deps, req, 'get_image', {});
      const { image_id } = req.params;
      const image = await inRequest(req, () => deps.store.getImage(image_id));
      if (!image) throw errors.notFound(`No image found with ID ${image_id}`);
      return imageView(image);
    },
  );
}
