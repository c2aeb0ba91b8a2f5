"""
LXD's response envelopes and documents (LXD REST API, C{shared/api/response.go}).

    sync    {"type": "sync", "status": "Success", "status_code": 200, "operation": "",
             "error_code": 0, "error": "", "metadata": ...}                    HTTP 200
    async   {"type": "async", "status": "Operation created", "status_code": 100,
             "operation": "/1.0/operations/ID", ..., "metadata": <operation>}  HTTP 202
    error   {"type": "error", "error": "<message>", "error_code": N, ...}     HTTP N

Clients (the Go client behind C{lxc}, pylxd) show the C{error} string as the failure. Errors are
L{vncproxy.web.errors.ApiError}s like everywhere else; this module registers LXD's envelope as
the error format of the C{lxd} family.
"""

import json
from datetime import datetime, timezone

from vncproxy.web.errors import register_family

#: The API family of the LXD routes in L{vncproxy.web.errors}.
FAMILY = "lxd"
API_VERSION = "1.0"
#: The API extensions clients check for: C{instances} (else C{lxc} falls back to
#: C{/1.0/containers}), C{console} (the console endpoints), C{console_vga_type} (so that
#: C{lxc console --type vga} reaches us and gets our explanation).
API_EXTENSIONS = ["instances", "console", "console_vga_type"]


def timestamp(seconds):
    """
    RFC 3339 with microseconds, as Go's C{time.Time} reads it.
    """
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sync(metadata):
    return {"type": "sync", "status": "Success", "status_code": 200, "operation": "",
            "error_code": 0, "error": "", "metadata": metadata}


def async_(operation_document):
    return {"type": "async", "status": "Operation created", "status_code": 100,
            "operation": f"/{API_VERSION}/operations/{operation_document['id']}",
            "error_code": 0, "error": "", "metadata": operation_document}


def error(code, message):
    """
    LXD's error envelope (C{lxc} prints C{Error: MESSAGE}).
    """
    return {"type": "error", "status": "", "status_code": 0, "operation": "",
            "error_code": code, "error": message, "metadata": None}


def _error_document(refusal, trace):
    body = error(refusal.code, refusal.message)
    if refusal.close_code is not None:  # every family carries it (vncproxy.web.errors)
        body["close_code"] = int(refusal.close_code)
    return body


# LXD's routes answer errors in LXD's envelope, wherever they are raised (our handlers, the
# site's early refusals of oversized or malformed requests).
register_family(FAMILY, _error_document)


def encode(body):
    return json.dumps(body, separators=(",", ":")).encode("utf-8") + b"\n"


def render(request, code, body):
    """
    Set the status and headers of a JSON response and return its bytes.
    """
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return encode(body)


def server_document(trusted, auth_methods=("tls",)):
    """
    C{GET /1.0}: what C{lxc remote add} and pylxd read first. An untrusted caller learns only
    that it is untrusted (as from LXD).
    """
    document = {
        "api_extensions": list(API_EXTENSIONS),
        "api_status": "stable",
        "api_version": API_VERSION,
        "auth": "trusted" if trusted else "untrusted",
        "auth_methods": list(auth_methods),
        "public": False,
    }
    if trusted:
        document["config"] = {}
        document["environment"] = {
            "server": "consoleproxy",
            "server_name": "consoleproxy",
            "server_version": "5.0",
            "server_clustered": False,
            "project": "default",
            "kernel_architecture": "x86_64",
            "architectures": ["x86_64"],
            "storage": "",
            "driver": "qemu",
        }
    return document


def instance_document(info, now):
    """
    C{GET /1.0/instances/NAME}: a libvirt domain as an LXD virtual machine.

    @param info: the hypervisor's L{vncproxy.hypervisor.InstanceInfo}.
    """
    status, code = ("Running", 103) if info.active else ("Stopped", 102)
    stamp = timestamp(now)
    return {
        "name": info.name,
        "description": "",
        "type": "virtual-machine",
        "status": status,
        "status_code": code,
        "architecture": "x86_64",
        "config": {"volatile.uuid": info.uuid},
        "devices": {},
        "expanded_config": {"volatile.uuid": info.uuid},
        "expanded_devices": {},
        "ephemeral": False,
        "stateful": False,
        "profiles": [],
        "project": "default",
        "location": "none",
        "created_at": stamp,
        "last_used_at": stamp,
    }
