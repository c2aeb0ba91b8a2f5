"""
Nova's wire details: the console protocol/type pairs, microversions, and the read-only
documents built from what libvirt says (the version documents that keystoneauth's discovery
reads before any call, and the server views that the clients read to turn a name or ID into a
server: python-openstackclient, novaclient, openstacksdk).

Plain functions (no I/O): the API resource calls them; those that take a request only read its
headers or set response headers.
"""

import re

from vncproxy.hypervisor import DomainState
from vncproxy.web.errors import ApiError

# The microversions we implement (remote-consoles needs 2.6; newer ones change nothing in the
# routes we serve). The version documents and the microversion parser use these two.
MIN_MICROVERSION = (2, 1)
MAX_MICROVERSION = (2, 100)
UPDATED = "2013-07-23T11:33:21Z"  # Nova's v2.1 document carries this fixed date
MEDIA_TYPE = "application/vnd.openstack.compute+json;version=2.1"
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# Nova: remote-consoles exists from 2.6; we answer as the newest microversion we know.
MIN_REMOTE_CONSOLES = (2, 6)

# OpenStack protocol -> the console types Nova defines for it. Types of protocols we do not
# serve are known so that they get 501 (not 400), as Nova's drivers answer.
NOVA_TYPES = {
    "vnc": ("novnc", "xvpvnc"),
    "serial": ("serial",),
    "spice": ("spice-html5",),
    "rdp": ("rdp-html5",),
    "mks": ("webmks",),
}
LEGACY_ACTIONS = {
    "os-getVNCConsole": "vnc",
    "os-getSerialConsole": "serial",
    "os-getSPICEConsole": "spice",
    "os-getRDPConsole": "rdp",
}

# libvirt's state -> Nova's (status, vm_state, power_state), as Nova's libvirt driver maps them.
_STATES = {
    DomainState.RUNNING: ("ACTIVE", "active", 1),
    DomainState.BLOCKED: ("ACTIVE", "active", 1),
    DomainState.PAUSED: ("PAUSED", "paused", 3),
    DomainState.SHUTDOWN: ("ACTIVE", "active", 4),
    DomainState.SHUTOFF: ("SHUTOFF", "stopped", 4),
    DomainState.CRASHED: ("ERROR", "error", 6),
    DomainState.PMSUSPENDED: ("SUSPENDED", "suspended", 7),
    DomainState.NOSTATE: ("UNKNOWN", "error", 0),
}


def check_pair(protocol, console_type):
    """
    400 for a protocol/type pair Nova does not define, 501 for one we do not serve.
    """
    if not isinstance(protocol, str) or protocol not in NOVA_TYPES:
        raise ApiError(400, f"invalid protocol {str(protocol)[:20]!r}")
    if console_type not in NOVA_TYPES[protocol]:
        raise ApiError(400, f"console type {str(console_type)[:20]!r} is not valid for "
                            f"protocol {protocol!r}")
    if protocol not in ("vnc", "serial"):
        raise ApiError(501, f"{protocol} consoles are not implemented")


def parse_microversion(request):
    """
    The compute microversion a request asks for, as a tuple, or C{None} when it names none.

    @raise ApiError: 400 for a malformed version, 406 for one newer than we implement.
    """
    value = None
    header = request.getHeader(b"openstack-api-version")
    if header:
        service, _, version = header.decode("latin-1").strip().partition(" ")
        if service.lower() == "compute":
            value = version.strip()
    if value is None:
        legacy = request.getHeader(b"x-openstack-nova-api-version")
        if legacy:
            value = legacy.decode("latin-1").strip()
    if value is None:
        return None
    if value.lower() == "latest":
        return MAX_MICROVERSION
    match = re.fullmatch(r"(\d+)\.(\d+)", value)
    if not match:
        raise ApiError(400, f"invalid microversion {value[:20]!r}")
    version = (int(match.group(1)), int(match.group(2)))
    if version < MIN_MICROVERSION or version > MAX_MICROVERSION:
        raise ApiError(406, f"microversion {value} is not supported "
                            f"({MIN_MICROVERSION[0]}.{MIN_MICROVERSION[1]} to "
                            f"{MAX_MICROVERSION[0]}.{MAX_MICROVERSION[1]})")
    return version


def negotiate_microversion(request):
    """
    Read the microversion the request asks for (L{parse_microversion}) and answer with the
    one we serve it at, in both of Nova's headers.

    @return: the version asked for, or C{None}.
    """
    version = parse_microversion(request)
    major, minor = version or MAX_MICROVERSION
    request.setHeader(b"openstack-api-version", f"compute {major}.{minor}".encode())
    request.setHeader(b"x-openstack-nova-api-version", f"{major}.{minor}".encode())
    request.setHeader(b"vary", b"OpenStack-API-Version, X-OpenStack-Nova-API-Version")
    return version


def base_url(request):
    """
    The API's root URL as this caller reached it (Nova builds its links the same way): the
    Host header when it is a plain host[:port], else the listener's own address.
    """
    scheme = "https" if request.isSecure() else "http"
    host = (request.getHeader(b"host") or b"").decode("latin-1")
    if not _HOST.fullmatch(host):
        address = request.getHost()
        host = f"[{address.host}]" if ":" in address.host else address.host
        host = f"{host}:{address.port}"
    return f"{scheme}://{host}"


def _version_text(version):
    return f"{version[0]}.{version[1]}"


def _v21(base):
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": _version_text(MAX_MICROVERSION),
        "min_version": _version_text(MIN_MICROVERSION),
        "updated": UPDATED,
        "links": [{"rel": "self", "href": f"{base}/v2.1/"}],
    }


def versions_document(base):
    """
    C{GET /}: the API versions this endpoint serves (only v2.1: there is no v2.0 here).

    @param base: the endpoint's root URL as the caller reached it, without a trailing slash.
    """
    return {"versions": [_v21(base)]}


def version_document(base):
    """
    C{GET /v2.1} and C{GET /v2.1/}: the one version, with its media type and documentation.
    """
    version = _v21(base)
    version["links"].append({"rel": "describedby", "type": "text/html",
                             "href": "https://docs.openstack.org/"})
    version["media-types"] = [{"base": "application/json", "type": MEDIA_TYPE}]
    return {"version": version}


def is_server_id(text):
    """
    Whether C{text} can be a server ID: Nova looks servers up by UUID only (names go through
    C{GET /servers?name=}).
    """
    return UUID.fullmatch(text) is not None


def server_view(info, base, project_id=None, detail=False):
    """
    One server as Nova's list (C{detail=False}) or show/detail views give it.

    @param info: a L{vncproxy.hypervisor.DomainInfo}.
    """
    prefix = f"{base}/v2.1/{project_id}" if project_id else f"{base}/v2.1"
    view = {
        "id": info.uuid,
        "name": info.name,
        "links": [{"rel": "self", "href": f"{prefix}/servers/{info.uuid}"},
                  {"rel": "bookmark", "href": f"{base}/servers/{info.uuid}"}],
    }
    if detail:
        status, vm_state, power_state = _STATES[info.state]
        view.update({
            "status": status,
            "OS-EXT-STS:vm_state": vm_state,
            "OS-EXT-STS:power_state": power_state,
            "OS-EXT-STS:task_state": None,
            "tenant_id": project_id or "",
            "metadata": {},
            "addresses": {},
        })
    return view


def name_filter(args):
    """
    The C{name} query parameter of a servers list, or C{None}. Nova matches it as a regular
    expression; we match the exact name (what the clients then keep anyway).
    """
    values = args.get(b"name")
    if not values:
        return None
    return values[0].decode("utf-8", "replace")
