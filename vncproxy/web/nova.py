"""
Nova's read-only documents, built from what libvirt says: the version documents that
keystoneauth's discovery reads before any call, and the server views that the clients read to
turn a name or ID into a server (python-openstackclient, novaclient, openstacksdk).

Plain functions of plain data (no Twisted, no I/O): the API resource calls them.
"""

import re

from vncproxy.hypervisor import DomainState

# The microversions we implement (remote-consoles needs 2.6; newer ones change nothing in the
# routes we serve). The version documents and the microversion parser use these two.
MIN_MICROVERSION = (2, 1)
MAX_MICROVERSION = (2, 100)
UPDATED = "2013-07-23T11:33:21Z"  # Nova's v2.1 document carries this fixed date
MEDIA_TYPE = "application/vnd.openstack.compute+json;version=2.1"
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

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
