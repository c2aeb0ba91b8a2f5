"""
Nova's version documents and server look-ups over real HTTP, from the (fake) hypervisor's
domains: what keystoneauth's discovery and the clients' find-by-name-or-ID read.
"""

import pytest
import pytest_twisted
from twisted.internet import threads

from tests.support import api

in_thread = threads.deferToThread
VM = "6f1b3c55-2f0e-4b8e-9a57-1f2d3c4b5a69"


@pytest_twisted.inlineCallbacks
def test_version_documents_need_no_key(proxy):
    """GET /, /v2.1 and /v2.1/ answer Nova's documents without a key, links on our host."""
    root, bare, slash = yield in_thread(lambda: [
        api.call(f"{proxy.api_url}{path}") for path in ("/", "/v2.1", "/v2.1/")])
    assert root[0] == bare[0] == slash[0] == 200
    assert bare == slash
    (listed,) = root[1]["versions"]
    version = bare[1]["version"]
    assert (version["id"], version["status"], version["min_version"], version["version"]) == \
        ("v2.1", "CURRENT", "2.1", "2.100")
    assert version["media-types"] == [{
        "base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}]
    assert version["links"][0] == {"rel": "self", "href": f"{proxy.api_url}/v2.1/"}
    assert {k: listed[k] for k in ("id", "status", "version", "min_version", "updated")} == \
        {k: version[k] for k in ("id", "status", "version", "min_version", "updated")}


@pytest.mark.parametrize("prefix", ["/v2.1", "/v2.1/6f70656e737461636b"])
@pytest_twisted.inlineCallbacks
def test_server_by_id(proxy, prefix):
    """GET servers/{id} (with or without a project) shows the domain as a Nova server."""
    status, body = yield in_thread(api.call, f"{proxy.api_url}{prefix}/servers/{VM}",
                                   key=proxy.key)
    assert status == 200
    server = body["server"]
    assert (server["id"], server["name"], server["status"]) == (VM, "vm1", "ACTIVE")
    assert server["OS-EXT-STS:vm_state"] == "active"
    assert server["links"][0] == {"rel": "self",
                                  "href": f"{proxy.api_url}{prefix}/servers/{VM}"}


@pytest_twisted.inlineCallbacks
def test_unknown_server_and_names_are_nova_404(proxy):
    """An unknown UUID, and a name (Nova looks up by UUID only), get Nova's itemNotFound."""
    results = yield in_thread(lambda: [
        api.call(f"{proxy.api_url}/v2.1/servers/{server}", key=proxy.key)
        for server in ("00000000-0000-0000-0000-000000000000", "vm1")])
    assert results == [
        (404, {"itemNotFound": {"code": 404, "message":
                                "Instance 00000000-0000-0000-0000-000000000000 could not be found."}}),
        (404, {"itemNotFound": {"code": 404, "message": "Instance vm1 could not be found."}}),
    ]


@pytest_twisted.inlineCallbacks
def test_server_lists_and_name_filter(proxy):
    """servers lists id, name, links; detail adds the state; ?name= keeps that exact name."""
    plain, detail, named, none = yield in_thread(lambda: [
        api.call(f"{proxy.api_url}{path}", key=proxy.key)[1]["servers"] for path in (
            "/v2.1/servers", "/v2.1/p1/servers/detail", "/v2.1/servers/detail?name=off1",
            "/v2.1/servers?name=vm")])
    assert [s["name"] for s in plain] == ["off1", "vm1"]
    assert set(plain[0]) == {"id", "name", "links"}
    assert [(s["name"], s["status"], s["OS-EXT-STS:vm_state"]) for s in detail] == \
        [("off1", "SHUTOFF", "stopped"), ("vm1", "ACTIVE", "active")]
    assert [s["name"] for s in named] == ["off1"] and none == []


@pytest_twisted.inlineCallbacks
def test_servers_need_a_key_and_libvirt(proxy):
    """Without a key: Nova's 401 body; libvirt unreachable: 503 serviceUnavailable."""
    unauthorized = yield in_thread(api.call, f"{proxy.api_url}/v2.1/servers")
    proxy.hypervisor.available = False
    down = yield in_thread(api.call, f"{proxy.api_url}/v2.1/servers/detail", key=proxy.key)
    assert unauthorized == (401, {"unauthorized": {"code": 401,
                                                   "message": "missing or invalid API key"}})
    assert down == (503, {"serviceUnavailable": {"code": 503,
                                                 "message": "hypervisor unavailable"}})
