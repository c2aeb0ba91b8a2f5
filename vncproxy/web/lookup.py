"""
What the API's handlers share to answer about an instance: describing it (404 / 503 as
L{ApiError}) and dating things in ISO 8601.
"""

from datetime import datetime, timezone

from twisted.internet import defer
from twisted.logger import Logger

from vncproxy.hypervisor import HypervisorError, NoSuchInstance
from vncproxy.web.errors import ApiError

_log = Logger(namespace="vncproxy.web.api")


def iso_utc(timestamp):
    """
    A clock time as an ISO 8601 UTC timestamp (C{None} stays C{None}).
    """
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def hypervisor_down(error, instance="(all)"):
    """
    An expected fault (libvirtd down or restarting): one log line, no traceback, and a 503.

    @raise ApiError: always.
    """
    _log.warn("hypervisor lookup of {instance} failed: {error}", instance=instance,
              error=str(error))
    raise ApiError(503, "hypervisor unavailable") from None


@defer.inlineCallbacks
def describe_instance(ctx, instance, missing="instance {} not found"):
    """
    Describe C{instance}: 404 (C{missing}'s message) when there is no such domain, 503 when
    libvirt cannot say.
    """
    try:
        info = yield ctx.hypervisor.describe(instance)
    except NoSuchInstance:
        raise ApiError(404, missing.format(instance)) from None
    except HypervisorError as e:
        hypervisor_down(e, instance)
    return info
