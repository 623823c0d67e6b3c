"""Posts server external events exactly as Cinder does (cinder/compute/nova.py): python-novaclient's
own API at microversion 2.51, `server_external_events.create(events)`, on a keystoneauth1 session.

Usage: nova_external_event.py COMPUTE_URL TOKEN EVENTS_JSON
  COMPUTE_URL  the compute endpoint, e.g. http://127.0.0.1:PORT/v2.1
  TOKEN        an X-Auth-Token (the token_endpoint plugin: no Keystone involved)
  EVENTS_JSON  a JSON list of events, e.g. [{"name": "volume-extended", "server_uuid": S, "tag": V}]
Prints one JSON object: {"events": [...novaclient's answer...], "api_version": "2.51"}.
Run with Debian's python (`env -u PYTHONPATH PATH=/usr/bin:/bin /usr/bin/python3`).
"""
import json
import sys

from keystoneauth1 import session, token_endpoint
from novaclient import api_versions, client


def main() -> int:
    url, token, events = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    sess = session.Session(auth=token_endpoint.Token(url, token))
    # Cinder builds its client with APIVersion('2.51') and its service credentials.
    nova = client.Client(api_versions.APIVersion('2.51'), session=sess)
    answer = nova.server_external_events.create(events)
    print(json.dumps({'events': answer, 'api_version': nova.api_version.get_string()}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
