"""
Nova's documents built from libvirt's view: version documents and server views.
"""

import pytest

from vncproxy.hypervisor import DomainInfo, DomainState
from vncproxy.web import nova

BASE = "http://203.0.113.5:8774"
VM = "6f1b3c55-2f0e-4b8e-9a57-1f2d3c4b5a69"


def test_version_documents_share_one_range():
    listed = nova.versions_document(BASE)["versions"]
    one = nova.version_document(BASE)["version"]
    assert [v["id"] for v in listed] == ["v2.1"]
    assert (one["min_version"], one["version"]) == ("2.1", "2.100")
    assert listed[0]["links"] == [{"rel": "self", "href": f"{BASE}/v2.1/"}]
    assert one["links"][0] == listed[0]["links"][0]  # the list's copy is not shared
    assert len(one["links"]) == 2 and len(listed[0]["links"]) == 1


@pytest.mark.parametrize("state, status, vm_state", [
    (DomainState.RUNNING, "ACTIVE", "active"), (DomainState.BLOCKED, "ACTIVE", "active"),
    (DomainState.PAUSED, "PAUSED", "paused"), (DomainState.SHUTDOWN, "ACTIVE", "active"),
    (DomainState.SHUTOFF, "SHUTOFF", "stopped"), (DomainState.CRASHED, "ERROR", "error"),
    (DomainState.PMSUSPENDED, "SUSPENDED", "suspended"),
    (DomainState.NOSTATE, "UNKNOWN", "error"),
])
def test_every_libvirt_state_has_a_nova_status(state, status, vm_state):
    view = nova.server_view(DomainInfo(VM, "vm1", state), BASE, "p1", detail=True)
    assert (view["status"], view["OS-EXT-STS:vm_state"]) == (status, vm_state)
    assert view["links"] == [{"rel": "self", "href": f"{BASE}/v2.1/p1/servers/{VM}"},
                             {"rel": "bookmark", "href": f"{BASE}/servers/{VM}"}]


def test_list_view_has_only_id_name_links():
    view = nova.server_view(DomainInfo(VM, "vm1", DomainState.RUNNING), BASE)
    assert set(view) == {"id", "name", "links"}


@pytest.mark.parametrize("text, ok", [
    (VM, True), (VM.upper(), True), ("vm1", False), (VM + "x", False), (VM[:-1], False),
    (VM.replace("-", ""), False),
])
def test_server_ids_are_uuids(text, ok):
    assert nova.is_server_id(text) is ok


def test_name_filter():
    assert nova.name_filter({}) is None
    assert nova.name_filter({b"name": [b"vm1"]}) == "vm1"
    assert nova.name_filter({b"name": [b"\xff"]}) == "\ufffd"
