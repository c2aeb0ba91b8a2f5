"""
Which way VNC sessions reach QEMU ([vnc] connect), decided from the configuration.
"""

import pytest

from vncproxy import config
from vncproxy.hypervisor import LifecycleEvent, LifecycleKind
from vncproxy.vncconnect import GraphicsRefusals, effective_mode, is_local


@pytest.mark.parametrize("uri, local", [
    ("qemu:///system", True), ("qemu:///session", True), ("qemu+unix:///system", True),
    ("qemu+unix:///system?socket=/run/x/libvirt-sock", True), ("test:///default", True),
    ("qemu+ssh://root@host/system", False), ("qemu+tcp://host/system", False),
    ("qemu+tls://host.example/system", False), ("qemu://host/system", False),
])
def test_local_libvirt_uris(uri, local):
    """Only a daemon reached through a UNIX socket can pass a file descriptor."""
    assert is_local(uri) is local


def test_graphics_fd_by_default_where_libvirt_is_local():
    assert effective_mode(config.defaults()) == ("graphics-fd", None)


def test_tcp_when_configured_remote_or_vencrypt():
    assert effective_mode(config.defaults(vnc_connect="tcp")) == ("tcp", None)
    mode, why = effective_mode(config.defaults(libvirt_uri="qemu+ssh://h/system"))
    assert mode == "tcp" and "not local" in why
    mode, why = effective_mode(config.defaults(vnc_tls_anonymous=True))
    assert mode == "tcp" and "VeNCrypt" in why


def test_a_refused_domain_is_remembered_until_its_next_lifecycle_event():
    refusals = GraphicsRefusals()
    refusals.remember("a")
    refusals.remember("b")
    refusals.lifecycle(LifecycleEvent("c", "c", LifecycleKind.STARTED))
    assert refusals.refused("a") and refusals.refused("b")
    refusals.lifecycle(LifecycleEvent("a", "a", LifecycleKind.STARTED))
    assert not refusals.refused("a") and refusals.refused("b")
    refusals.lifecycle(LifecycleEvent("", "", LifecycleKind.RECONNECTED))
    assert not refusals.refused("b")
