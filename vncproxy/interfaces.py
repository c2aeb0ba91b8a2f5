"""
The seams of consoleproxy: every boundary with the outside world is one of these interfaces,
with a real implementation and a fake that face the same contract tests.
"""

from zope.interface import Attribute, Interface


class IHypervisor(Interface):
    """
    Finds domains and their consoles, and reports their lifecycle.

    Every query returns a L{Deferred} that fires on the reactor thread; blocking work
    (libvirt calls) never runs on the reactor thread.
    """

    def describe(instance):
        """
        Look a domain up by UUID or by name and read its console details.

        @param instance: a domain UUID (any case, with dashes) or a domain name.
        @type instance: L{str}
        @return: a L{Deferred} firing with a L{vncproxy.hypervisor.DomainInfo}, or failing with
            L{vncproxy.hypervisor.NoSuchInstance} when there is no such domain, or with
            L{vncproxy.hypervisor.HypervisorError} when the hypervisor cannot be asked.
        """

    def list_active():
        """
        Describe every active domain.

        @return: a L{Deferred} firing with a L{list} of L{vncproxy.hypervisor.DomainInfo}.
        """

    def subscribe(listener):
        """
        Call C{listener(event)} with a L{vncproxy.hypervisor.LifecycleEvent} for every lifecycle
        event of any domain, on the reactor thread, from now on.

        @return: a no-argument callable that unsubscribes.
        """

    def ping():
        """
        Check that the hypervisor answers.

        @return: a L{Deferred} firing with C{True} when it does, C{False} otherwise (never fails).
        """


class ITokenStore(Interface):
    """
    Mints and redeems short-lived, single-use console access tokens.
    """

    ttl = Attribute("How long a token stays valid after it is minted, in seconds.")

    def mint(instance_uuid, console_type, force=False, caller=None):
        """
        Create a token bound to one instance and one console type.

        @return: a tuple C{(secret, grant)}: the token (returned to the caller once, never
            stored) and the L{vncproxy.tokens.Grant} it stands for.
        """

    def consume(secret, now=None):
        """
        Redeem a token: the first call with a valid, unexpired token returns its grant and
        makes the token unusable.

        @raise vncproxy.tokens.TokenRejected: when the token is unknown, used or expired.
        """
