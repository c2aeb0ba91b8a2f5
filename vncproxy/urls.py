"""
The URLs we hand out, built in one place from the configuration.

::

    console_base   http(s)://HOST[:PORT][/PREFIX]  public_url, or the console listener's own
    websocket_base ws(s)://...                     the same, for WebSockets
    ibm_href       ws(s)://.../v1/instances/UUID/console?access_token=T
    novnc          http(s)://.../vnc_auto.html?path=[PREFIX/]websockify%3Ftoken%3DT
    serial         ws(s)://.../?token=T
    xvpvnc         http://HOST:XVPVNC_PORT/console?token=T     (Nova's xvp viewer URL)
    vnc            vnc://:PASSWORD@HOST:VNC_PORT               (native viewers, [listen] vnc)

XVPVNC_PORT and VNC_PORT are C{[console] public_xvpvnc_port} and C{public_vnc_port} when set
(this node's ports on a region's front door, docs/region.md), else the listeners' own ports.

HOST is C{public_url}'s host when set; otherwise the console listener's interface when it
names one, else this machine's reachable name or address, looked up once (L{this_host}) when the service starts and
never again on a request. PREFIX is C{public_url}'s path (a reverse proxy publishing us under a
path); a per-node prefix would be added to L{Urls.console_base} and nowhere else.
"""

import functools
import socket
from urllib.parse import quote, urlsplit

from vncproxy import endpoints, hostname


@functools.cache
def this_host():
    """
    This machine as a viewer elsewhere can reach it (L{vncproxy.hostname.choose}: the FQDN when
    it resolves beyond loopback, else the default route's address), looked up once per process.
    """
    return hostname.choose(socket.getfqdn())


def _host_for_url(host):
    return f"[{host}]" if host and ":" in host else host


def _derive_base(description, plain_scheme):
    args, kwargs = endpoints.parse_args(endpoints.unwrapped(description))
    scheme = "https" if args[:1] == ["ssl"] else plain_scheme
    port = endpoints.port(description)
    interface = kwargs.get("interface", "")
    host = this_host() if interface in ("", "0.0.0.0", "::") else interface
    default_port = 443 if scheme == "https" else 80
    suffix = "" if port in (None, default_port) else f":{port}"
    return f"{scheme}://{_host_for_url(host)}{suffix}"


def console_base(config):
    """
    The http(s) base URL of the console listener as clients reach it, no trailing slash.
    """
    if config.public_url:
        parts = urlsplit(config.public_url)
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        return parts._replace(scheme=scheme, path=parts.path.rstrip("/")).geturl()
    return _derive_base(config.console_listen, "http")


class Urls:
    """
    @param config: the L{vncproxy.config.Config}.
    """

    def __init__(self, config):
        self.console_base = console_base(config)
        base = self.console_base
        self.websocket_base = ("wss" + base[5:]) if base.startswith("https") else ("ws" + base[4:])
        host = _host_for_url(urlsplit(base).hostname)
        self._prefix = urlsplit(base).path.strip("/")
        # A front door's per-node ports (raw TCP has no path prefix to route on): [console]
        # public_xvpvnc_port and public_vnc_port; 0: the listener's own port.
        self.xvpvnc_base = "http://" + self._on_public_host(
            host, config.public_xvpvnc_port, config.xvpvnc_listen)
        self.vnc_base = self._on_public_host(host, config.public_vnc_port, config.vnc_listen)

    @staticmethod
    def _on_public_host(host, public_port, listen):
        port = public_port or endpoints.port(listen)
        return f"{host}:{port}" if port else host

    def ibm_href(self, instance_uuid, secret):
        return f"{self.websocket_base}/v1/instances/{instance_uuid}/console?access_token={secret}"

    def novnc(self, secret):
        # noVNC resolves path= against the host's root, not the page: behind a reverse proxy
        # that publishes us under a prefix, the WebSocket path carries the prefix too.
        path = f"{self._prefix}/websockify" if self._prefix else "websockify"
        return f"{self.console_base}/vnc_auto.html?path=" + quote(f"{path}?token={secret}",
                                                                  safe="")

    def serial(self, secret):
        return f"{self.websocket_base}/?token={secret}"

    def xvpvnc(self, secret):
        return f"{self.xvpvnc_base}/console?token={secret}"

    def vnc(self, password):
        """
        @param password: the one-time VNC password (URL-safe characters only).
        """
        return f"vnc://:{password}@{self.vnc_base}"


__all__ = ["Urls", "console_base", "this_host"]
