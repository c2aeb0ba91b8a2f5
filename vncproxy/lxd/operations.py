"""
LXD operations: what C{POST /1.0/instances/NAME/console} creates (LXD's "websocket" class of
background operation).

An operation has an id (a UUID: public, it appears in URLs and logs) and one secret per
WebSocket it offers (C{"0"}: the console's bytes, C{"control"}: JSON commands). The secrets
follow the rules of our console tokens (L{vncproxy.tokens}): 256 random bits, handed out once
in the C{POST} response, kept only as SHA-256 digests, single use, valid for C{ttl} seconds,
never logged, and never shown again (not in C{GET /1.0/operations/ID}, not in events).

States, each change sent to the event listeners of the operation's caller::

    RUNNING --finish()--------> SUCCESS     (the user detached)
            --finish(error)---> FAILURE     (taken over, instance stopped, timed out, ...)

A finished operation stays readable for C{keep} seconds (C{lxc} reads it once more after the
event), then is forgotten.
"""

import hashlib
import secrets
import uuid
from enum import Enum

from vncproxy.lxd.envelope import API_VERSION, timestamp

#: The two WebSockets of a console operation.
CHANNELS = ("0", "control")


class Status(Enum):
    RUNNING = ("Running", 103)
    SUCCESS = ("Success", 200)
    FAILURE = ("Failure", 400)

    @property
    def text(self):
        return self.value[0]

    @property
    def code(self):
        return self.value[1]


class SecretRejected(Exception):
    """
    No operation has this id, or the secret is not one of its unused, unexpired secrets. The
    message never holds the secret.
    """


class RequestorMismatch(SecretRejected):
    """
    The connection's caller is not the operation's creator.
    """


def _digest(secret):
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


class Operation:
    """
    @ivar id: the operation's UUID.
    @ivar caller: who created it (a credential label); only this caller sees its events.
    @ivar handler: what runs it (L{vncproxy.lxd.channels.ConsoleOperation}), set by its
        creator.
    """

    def __init__(self, op_id, instance_name, caller, description, created_at, expires_at,
                 digests):
        self.id = op_id
        self.instance_name = instance_name
        self.caller = caller
        self.description = description
        self.created_at = created_at
        self.updated_at = created_at
        self.expires_at = expires_at
        self.status = Status.RUNNING
        self.error = ""
        self.handler = None
        self._digests = digests  # sha256(secret) -> channel name, until redeemed

    @property
    def url(self):
        return f"/{API_VERSION}/operations/{self.id}"

    @property
    def finished(self):
        return self.status is not Status.RUNNING

    def document(self, fds=None):
        """
        The operation as LXD shows it; C{fds} (the secrets) only in the C{POST} response.
        """
        metadata = {"fds": dict(fds)} if fds else {}
        return {
            "id": self.id,
            "class": "websocket",
            "description": self.description,
            "created_at": timestamp(self.created_at),
            "updated_at": timestamp(self.updated_at),
            "status": self.status.text,
            "status_code": self.status.code,
            "resources": {"instances": [f"/{API_VERSION}/instances/{self.instance_name}"]},
            "metadata": metadata,
            "may_cancel": False,
            "err": self.error,
            "location": "none",
        }


class OperationStore:
    """
    @param clock: an L{IReactorTime}.
    @param ttl: seconds the secrets of an operation stay valid.
    @param keep: seconds a finished operation stays readable.
    """

    def __init__(self, clock, ttl, keep=60.0):
        self._clock = clock
        self.ttl = ttl
        self.keep = keep
        self._operations = {}  # id -> Operation
        self._forget_at = {}  # id -> when a finished operation is dropped
        self._listeners = []

    def __len__(self):
        return len(self._operations)

    def create(self, instance_name, caller, description="Showing console"):
        """
        A new running operation with one fresh secret per channel.

        @return: C{(operation, secrets)}, C{secrets} mapping each channel to its secret: the
            only time the secrets exist in the clear.
        """
        now = self._clock.seconds()
        self._sweep(now)
        plain = {channel: secrets.token_hex(32) for channel in CHANNELS}
        operation = Operation(str(uuid.uuid4()), instance_name, caller, description, now,
                              now + self.ttl, {_digest(s): c for c, s in plain.items()})
        self._operations[operation.id] = operation
        self._emit(operation)
        return operation, plain

    def get(self, op_id):
        """
        @return: the L{Operation}, or C{None} when there is none with this id (any more).
        """
        self._sweep(self._clock.seconds())
        return self._operations.get(op_id)

    def redeem(self, op_id, secret, requestor=None, strict=False):
        """
        Spend one of an operation's secrets.

        @param requestor: who connects (a credential label), or C{None} when the connection
            names nobody.
        @param strict: the connection always names its caller (a UNIX socket's peer, a TLS
            client certificate): only the operation's creator may use its secrets. Otherwise a
            caller who names someone else is refused, one who names nobody needs the secret
            only (LXD's rule; pylxd opens WebSockets without its key).
        @return: C{(operation, channel)}.
        @raise RequestorMismatch: someone else connects; the secret is not spent.
        @raise SecretRejected: unknown operation, finished operation, wrong, used or expired
            secret.
        """
        now = self._clock.seconds()
        self._sweep(now)
        operation = self._operations.get(op_id)
        if operation is None or operation.finished:
            raise SecretRejected("no such running operation")
        if (strict or requestor is not None) and requestor != operation.caller:
            raise RequestorMismatch("Requestor mismatch")
        if not isinstance(secret, str) or not secret:
            raise SecretRejected("secret missing")
        if now >= operation.expires_at:
            operation._digests.clear()
            raise SecretRejected("secret expired")
        channel = operation._digests.pop(_digest(secret), None)
        if channel is None:
            raise SecretRejected("secret invalid or used")
        return operation, channel

    def finish(self, operation, error=None):
        """
        End a running operation: C{SUCCESS}, or C{FAILURE} with C{error} (shown to the user).
        Its unused secrets stop working. Idempotent.
        """
        if operation.finished:
            return
        now = self._clock.seconds()
        operation.status = Status.FAILURE if error else Status.SUCCESS
        operation.error = error or ""
        operation.updated_at = now
        operation._digests.clear()
        self._forget_at[operation.id] = now + self.keep
        self._emit(operation)

    def subscribe(self, listener):
        """
        Call C{listener(operation)} on every creation and state change.

        @return: a function that unsubscribes.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, operation):
        for listener in list(self._listeners):
            listener(operation)

    def _sweep(self, now):
        stale = [op_id for op_id, at in self._forget_at.items() if at <= now]
        for op_id in stale:
            del self._forget_at[op_id]
            self._operations.pop(op_id, None)


def event(operation, now):
    """
    The C{/1.0/events} message for an operation's new state.
    """
    return {"type": "operation", "timestamp": timestamp(now), "metadata": operation.document(),
            "location": "none", "project": "default"}
