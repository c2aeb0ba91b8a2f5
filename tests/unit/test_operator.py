"""
The operator's building blocks on a test clock: the session inventory of the registry, the
token store's reconnect-grace reservations, and console actions turned into key codes.
"""

from dataclasses import dataclass

import pytest
from twisted.internet.task import Clock

from vncproxy.actions import KEY_CODES, MAX_KEYS, BadAction, parse_action
from vncproxy.clientaddr import peer_host
from vncproxy.closecodes import REASONS, CloseCode
from vncproxy.sessions import SessionRegistry, SessionTimer
from vncproxy.tokens import TokenStore


@dataclass(eq=False)  # sessions are told apart by identity, as the real ones
class _Session:
    grant: object
    peer: str
    timer: SessionTimer
    bytes_to_viewer: int = 0
    bytes_from_viewer: int = 0

    def close(self, code, detail=None):
        self.closed = code


def _session(clock, store, peer="tcp4:10.0.0.7:51000", console_type="vnc", read_only=False):
    _, grant = store.mint("i1", console_type, read_only=read_only)
    timer = SessionTimer(clock, 600, 3600, lambda code: None)
    timer.start()
    return _Session(grant, peer, timer)


def test_registry_describes_each_session_with_its_listener():
    """Each admitted session gets an id and a row: kind, mode, listener, client host, clock
    times (last activity follows traffic), byte counts and grant id."""
    clock, store, registry = Clock(), TokenStore(Clock(), 180), SessionRegistry(max_vnc=2)
    clock.advance(1000)
    vnc = _session(clock, store)
    entry = registry.admit("i1", "vnc", vnc, "websocket")
    clock.advance(5)
    serial = _session(clock, store, peer="10.0.0.8", console_type="serial", read_only=True)
    registry.admit("i1", "serial", serial, "xvpvnc")
    clock.advance(2)
    vnc.timer.activity()
    vnc.bytes_to_viewer, vnc.bytes_from_viewer = 100, 7
    rows = [e.describe() for e in registry.entries("i1")]
    assert rows[0] == {
        "id": entry.id, "state": "open", "console_type": "vnc", "mode": "interactive",
        "client": "10.0.0.7", "listener": "websocket", "started_at": 1000.0,
        "last_activity_at": 1007.0, "bytes_to_viewer": 100, "bytes_from_viewer": 7,
        "grant_id": vnc.grant.id}
    assert rows[1]["mode"] == "read_only" and rows[1]["client"] == "10.0.0.8"
    assert rows[1]["started_at"] == 1005.0 == rows[1]["last_activity_at"]
    assert registry.entries("i2") == []


def test_registry_finds_sessions_by_id_within_their_instance_only():
    """find() answers a live session of that instance; another instance's id or a released
    session's is None."""
    clock, store, registry = Clock(), TokenStore(Clock(), 180), SessionRegistry(max_vnc=2)
    session = _session(clock, store)
    entry = registry.admit("i1", "vnc", session, "websocket")
    assert registry.find("i1", entry.id).session is session
    assert registry.find("i2", entry.id) is None
    registry.release("i1", "vnc", session)
    assert registry.find("i1", entry.id) is None and registry.entries("i1") == []


@pytest.mark.parametrize("peer, host", [
    ("tcp4:127.0.0.1:5000", "127.0.0.1"), ("tcp6:::1:5000", "::1"), ("tcp:10.1.2.3:9", "10.1.2.3"),
    ("192.0.2.1", "192.0.2.1"), ("unix", "unix")])
def test_peer_host(peer, host):
    """The client address is the host part of the listener's peer string."""
    assert peer_host(peer) == host


def test_reservations_are_listed_until_cancelled_or_expired():
    """A dropped session's token is a reservation of its instance until the grace ends;
    cancelling it makes the token unusable."""
    clock = Clock()
    store = TokenStore(clock, 180, reconnect_grace=15)
    secret, grant = store.mint("i1", "vnc")
    other_secret, other = store.mint("i1", "serial")
    store.consume(secret)
    store.consume(other_secret)
    store.release(grant, True, 0.0)
    store.release(other, True, 0.0)
    assert [(g.id, d) for g, d in store.reservations("i1")] == [(grant.id, 15.0), (other.id, 15.0)]
    assert store.reservations("i2") == []
    assert store.cancel_reservation("i2", grant.id) is None
    assert store.cancel_reservation("i1", grant.id).id == grant.id
    with pytest.raises(Exception):
        store.consume(secret)
    clock.advance(15)
    assert store.reservations("i1") == []


def test_close_code_4014():
    assert REASONS[CloseCode.ENDED_BY_OPERATOR] == "ended by operator"
    assert int(CloseCode.ENDED_BY_OPERATOR) == 4014


@pytest.mark.parametrize("body, keycodes", [
    ({"action": "ctrl-alt-del"}, (29, 56, 111)),
    ({"action": "sysrq", "key": "s"}, (56, 99, 31)),
    ({"action": "sysrq", "key": "B"}, (56, 99, 48)),
    ({"action": "sysrq", "key": "9"}, (56, 99, 10)),
    ({"action": "nmi"}, ()),
    ({"action": "send-keys", "keys": ["KEY_LEFTCTRL", "KEY_LEFTALT", "KEY_F2"]}, (29, 56, 60)),
    ({"action": "send-keys", "keys": ["KEY_0", "KEY_ENTER", "KEY_ESC", "KEY_F12"]}, (11, 28, 1, 88)),
])
def test_actions_become_linux_key_codes(body, keycodes):
    """Each action is the Linux key codes of linux/input-event-codes.h, in pressing order."""
    action = parse_action(body)
    assert action.name == body["action"] and action.keycodes == keycodes


@pytest.mark.parametrize("body, message", [
    ({}, "action must be one of"),
    ({"action": "reboot"}, "action must be one of"),
    ({"action": "sysrq"}, "sysrq needs a key"),
    ({"action": "sysrq", "key": "ab"}, "sysrq needs a key"),
    ({"action": "sysrq", "key": "-"}, "sysrq needs a key"),
    ({"action": "sysrq", "key": "é"}, "sysrq needs a key"),
    ({"action": "send-keys"}, "send-keys needs keys"),
    ({"action": "send-keys", "keys": []}, "send-keys needs keys"),
    ({"action": "send-keys", "keys": ["KEY_A"] * (MAX_KEYS + 1)}, "send-keys needs keys"),
    ({"action": "send-keys", "keys": ["A"]}, "unknown key 'A'"),
    ({"action": "send-keys", "keys": [1]}, "unknown key '1'"),
    ({"action": "send-keys", "keys": ["KEY_NOPE"]}, "unknown key 'KEY_NOPE'"),
])
def test_bad_actions_are_refused_with_a_reason(body, message):
    with pytest.raises(BadAction, match=message):
        parse_action(body)


def test_key_table_has_no_duplicate_codes():
    """Every name maps to its own code (a typo in the table would show as a duplicate)."""
    assert len(set(KEY_CODES.values())) == len(KEY_CODES)
