"""Judge live responses with tempest's own strict response schemas (Debian's tempest package).

Reads a JSON array on stdin: [{"schema": "compute.v2_1.servers.get_server", "status": 200,
"body": <parsed JSON or null for an empty body>, "headers": {...}}, ...]. The schema is a dotted
path under tempest.lib.api_schema.response. Validates each with tempest's
RestClient.validate_response (status, jsonschema Draft4 with tempest's format checker, empty body
when the schema has none) and prints a JSON array of {"schema", "ok", "error"} on stdout.
Run with Debian's /usr/bin/python3 (tempest is installed there, not in other interpreters).
"""
import importlib
import json
import sys

from tempest.lib.common import rest_client


class _Resp(dict):
    """What validate_response reads of a response: .status and the headers as a dict."""

    def __init__(self, status, headers):
        super().__init__({k.lower(): v for k, v in (headers or {}).items()})
        self.status = status


def _schema(path):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module("tempest.lib.api_schema.response." + module), name)


def main():
    out = []
    for case in json.load(sys.stdin):
        try:
            rest_client.RestClient.validate_response(_schema(case["schema"]), _Resp(case["status"], case.get("headers")), case.get("body"))
            out.append({"schema": case["schema"], "ok": True, "error": None})
        except Exception as ex:  # noqa: BLE001 - every failure is reported, not raised
            out.append({"schema": case["schema"], "ok": False, "error": "%s: %s" % (type(ex).__name__, ex)})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
