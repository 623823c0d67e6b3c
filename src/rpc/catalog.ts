/**
 * Where each service listens (Keystone's service catalog, reduced to what one process needs).
 * Compute and the volume service call each other, so whichever starts first cannot be given the
 * other's URL when it is built: each registers its endpoint once it listens, and the RPC clients
 * look the endpoint up at every call, as an OpenStack service looks Cinder or Nova up in the
 * catalog. A call before the other side listens is ServiceUnavailable (503, uncertain).
 */
import { errors } from '../errors.js';

/**
 * The services of the catalog, by our names: Nova's `compute`, Cinder's `volumev3`, Keystone's
 * `identity` (the embedded one) and Glance's `image` (when served).
 */
export type ServiceName = 'compute' | 'volume' | 'identity' | 'image';

/** Endpoints by service name; see the module comment. */
export class ServiceCatalog {
  private readonly endpoints = new Map<ServiceName, string>();

  /** Record where `service` listens (its base URL, e.g. `http://127.0.0.1:8776`). */
  register(service: ServiceName, url: string): void {
    this.endpoints.set(service, url);
  }

  /** Every endpoint registered so far (base URLs by service), for the embedded Keystone's catalog. */
  urls(): Partial<Record<ServiceName, string>> {
    return Object.fromEntries(this.endpoints);
  }

  /** A lookup of `service` for an RPC client's `url` option: resolved at each call. */
  endpoint(service: ServiceName): () => string {
    return () => {
      const url = this.endpoints.get(service);
      if (url === undefined) throw errors.serviceUnavailable(`The ${service} API is not listening yet; try again shortly.`);
      return url;
    };
  }
}
