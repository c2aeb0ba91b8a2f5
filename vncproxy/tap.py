"""
C{twistd consoleproxy}: command line options and the composition root.

This is the one module that may import the global reactor; everything below receives it.
"""

from twisted.python import usage

from vncproxy import config as _config
from vncproxy import vncconnect
from vncproxy.web.auth import KeyFileError, ensure_key_file, load_keys


class Options(usage.Options):
    synopsis = "[--config PATH] [--set SECTION.KEY=VALUE ...]"
    longdesc = ("Run the console proxy. Without --config, built-in defaults apply "
                "(see etc/consoleproxy.conf for every key).")
    optParameters = [
        ["config", "c", None, "INI configuration file (default: built-in defaults)."],
    ]

    def __init__(self):
        super().__init__()
        self["overrides"] = []

    def opt_set(self, value):
        """
        Override one configuration key, e.g. --set listen.console=tcp:7080 (repeatable).
        """
        key, equals, setting = value.partition("=")
        section, dot, name = key.partition(".")
        if not (equals and dot and section and name):
            raise usage.UsageError(f"--set takes SECTION.KEY=VALUE, not {value!r}")
        self["overrides"].append((section, name, setting))

    def postOptions(self):
        try:
            self["config_obj"] = _config.load(self["config"], self["overrides"])
        except _config.ConfigError as e:
            raise usage.UsageError(str(e)) from None


def load_api_keys(config):
    path = config.api_keys_file or ensure_key_file(config.state_dir)
    return load_keys(path)


def makeService(options, reactor=None, hypervisor=None):
    """
    Build the whole service from parsed L{Options}.
    """
    if reactor is None:
        from twisted.internet import reactor
    from vncproxy import auditjournal, relay
    from vncproxy.service import ConsoleProxyService

    auditjournal.install()  # under systemd: audit events as journal entries with fields
    config = options["config_obj"]
    relay.enable_dispatch(reactor, config)  # a cheaper dispatch per socket event
    try:
        keys = load_api_keys(config)
    except (KeyFileError, OSError) as e:
        raise usage.UsageError(str(e)) from None
    if hypervisor is None:
        from vncproxy.hypervisor.libvirt_adapter import LibvirtHypervisor

        # With graphics-fd in effect the VNC passwords are never needed: not even read.
        mode, _ = vncconnect.effective_mode(config)
        hypervisor = LibvirtHypervisor(reactor, config.libvirt_uri,
                                       read_secrets=mode != vncconnect.GRAPHICS_FD)
    try:
        return ConsoleProxyService(config, reactor, hypervisor, keys)
    except _config.ConfigError as e:
        raise usage.UsageError(str(e)) from None
