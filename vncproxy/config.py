"""
Configuration: one INI file, validated into a frozen L{Config}.

Every key has a built-in default, so the service runs with no file at all. Unknown sections and
keys are errors that name the file, the section and the key: a typo must never be silently
ignored. Listener values are Twisted endpoint strings, checked at load time. Each value is
read by one parser of L{vncproxy.configvalues}; this module adds where a bad one was (file,
section, key) and the checks that span several keys.

The schema below is the single source of truth; C{etc/consoleproxy.conf} documents every key
(a test checks that the two agree).
"""

import configparser
import os
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from vncproxy import urls
from vncproxy.configvalues import (
    at_least,
    boolean,
    endpoint,
    issuers,
    listeners,
    mode,
    networks,
    node_id,
    non_negative,
    one_of,
    optional_endpoint,
    positive,
    url,
    words,
)


class ConfigError(ValueError):
    """
    The configuration is invalid; the message names file, section and key.
    """


# (section, key) -> (field name, parser, default as written in the file)
SCHEMA = {
    ("listen", "api"): ("api_listen", endpoint, "tcp:6090:interface=127.0.0.1"),
    ("listen", "console"): ("console_listen", endpoint, "tcp:6080"),
    ("listen", "xvpvnc"): ("xvpvnc_listen", endpoint, "tcp:6081"),
    ("proxy", "trusted"): ("proxy_trusted", networks, ""),
    ("proxy", "proxy_protocol"): ("proxy_protocol", listeners, ""),
    ("listen", "vnc"): ("vnc_listen", endpoint, "tcp:6084"),
    ("console", "public_url"): ("public_url", url, ""),
    ("console", "allowed_origins"): ("allowed_origins", words, ""),
    ("console", "prefix"): ("public_prefix_mode", one_of("stripped", "kept"), "stripped"),
    ("console", "public_xvpvnc_port"): ("public_xvpvnc_port", non_negative(int), "0"),
    ("console", "public_vnc_port"): ("public_vnc_port", non_negative(int), "0"),
    ("api", "keys_file"): ("api_keys_file", str, ""),
    ("libvirt", "uri"): ("libvirt_uri", str, "qemu:///system"),
    ("tokens", "token_ttl"): ("token_ttl", positive(float), "180"),
    ("tokens", "reconnect_grace"): ("reconnect_grace", non_negative(float), "15"),
    ("tokens", "reconnect_same_address"): ("reconnect_same_address", boolean, "true"),
    ("tokens", "node_id"): ("node_id", node_id, ""),
    ("tokens", "trusted_issuers"): ("trusted_issuers", issuers, ""),
    ("tokens", "clock_skew"): ("grant_clock_skew", non_negative(float), "30"),
    ("sessions", "max_vnc_sessions"): ("max_vnc_sessions", positive(int), "2"),
    ("sessions", "max_vnc_viewers"): ("max_vnc_viewers", non_negative(int), "8"),
    ("sessions", "idle_timeout"): ("idle_timeout", positive(float), "600"),
    ("sessions", "max_session"): ("max_session", positive(float), "3600"),
    ("ratelimit", "window"): ("ratelimit_window", positive(float), "60"),
    ("ratelimit", "slow_after"): ("ratelimit_slow_after", non_negative(int), "5"),
    ("ratelimit", "refuse_after"): ("ratelimit_refuse_after", positive(int), "20"),
    ("vnc", "connect_timeout"): ("vnc_connect_timeout", positive(float), "10"),
    ("vnc", "handshake_timeout"): ("vnc_handshake_timeout", positive(float), "15"),
    ("vnc", "tls_ca"): ("vnc_tls_ca", str, ""),
    ("vnc", "tls_cert"): ("vnc_tls_cert", str, ""),
    ("vnc", "tls_key"): ("vnc_tls_key", str, ""),
    ("vnc", "tls_hostname"): ("vnc_tls_hostname", str, ""),
    ("vnc", "tls_anonymous"): ("vnc_tls_anonymous", boolean, "false"),
    ("vnc", "zero_copy"): ("vnc_zero_copy", boolean, "true"),
    ("vnc", "connect"): ("vnc_connect", one_of("graphics-fd", "tcp"), "graphics-fd"),
    ("relay", "lean_dispatch"): ("relay_lean_dispatch", boolean, "true"),
    ("relay", "write_through"): ("relay_write_through", boolean, "true"),
    ("relay", "websocket_send"): ("relay_websocket_send", boolean, "true"),
    ("relay", "websocket_receive"): ("relay_websocket_receive", boolean, "true"),
    ("relay", "websocket_unmask"): ("relay_websocket_unmask", boolean, "true"),
    ("xvpvnc", "native_wait"): ("xvpvnc_native_wait", positive(float), "2"),
    ("xvpvnc", "max_pending_per_address"): ("xvpvnc_max_pending_per_address", positive(int),
                                            "32"),
    ("xvpvnc", "max_pending"): ("xvpvnc_max_pending", positive(int), "1024"),
    ("xvpvnc", "max_failures_per_instance"): ("xvpvnc_max_failures_per_instance",
                                              positive(int), "20"),
    ("xvpvnc", "password_checks_per_second"): ("xvpvnc_password_checks_per_second",
                                               positive(float), "20"),
    ("http", "header_timeout"): ("http_header_timeout", positive(float), "10"),
    ("http", "idle_timeout"): ("http_idle_timeout", positive(float), "60"),
    ("http", "max_pending_per_address"): ("http_max_pending_per_address", positive(int), "32"),
    ("http", "max_pending"): ("http_max_pending", positive(int), "1024"),
    ("service", "state_dir"): ("state_dir", str, "/var/lib/consoleproxy"),
    ("serial", "source"): ("serial_source", one_of("libvirt", "pty"), "libvirt"),
    ("serial", "domains"): ("serial_domains", words, "*"),
    ("serial", "log_dir"): ("serial_log_dir", str, ""),
    ("serial", "log_size"): ("serial_log_size", at_least(int, 4096), "1048576"),
    ("serial", "log_files"): ("serial_log_files", non_negative(int), "2"),
    ("serial", "scrollback"): ("serial_scrollback", non_negative(int), "65536"),
    ("serial", "viewer_queue"): ("serial_viewer_queue", at_least(int, 4096), "1048576"),
    ("serial", "slow_viewer_grace"): ("serial_slow_viewer_grace", positive(float), "5"),
    ("serial", "max_viewers"): ("serial_max_viewers", positive(int), "16"),
    ("web", "novnc_dir"): ("novnc_dir", str, "/usr/share/novnc"),
    ("web", "xterm_dir"): ("xterm_dir", str, ""),
    ("lxd", "listen"): ("lxd_listen", optional_endpoint("unix"), ""),
    ("lxd", "socket_owner"): ("lxd_socket_owner", str, ""),
    ("lxd", "socket_group"): ("lxd_socket_group", str, ""),
    ("lxd", "socket_mode"): ("lxd_socket_mode", mode, "0660"),
    ("lxd", "listen_tls"): ("lxd_listen_tls", optional_endpoint("ssl"), ""),
    ("lxd", "trusted_certificates"): ("lxd_trusted_certificates", str, ""),
}


@dataclass(frozen=True)
class Config:
    """
    The validated configuration. Build it with L{load}, L{from_string} or L{defaults}.
    """

    api_listen: str
    console_listen: str
    xvpvnc_listen: str
    proxy_trusted: tuple
    proxy_protocol: tuple
    vnc_listen: str
    public_url: str
    allowed_origins: tuple
    public_prefix_mode: str
    public_xvpvnc_port: int
    public_vnc_port: int
    api_keys_file: str
    libvirt_uri: str
    token_ttl: float
    reconnect_grace: float
    reconnect_same_address: bool
    node_id: str
    trusted_issuers: tuple
    grant_clock_skew: float
    max_vnc_sessions: int
    max_vnc_viewers: int
    idle_timeout: float
    max_session: float
    ratelimit_window: float
    ratelimit_slow_after: int
    ratelimit_refuse_after: int
    vnc_connect_timeout: float
    vnc_handshake_timeout: float
    vnc_tls_ca: str
    vnc_tls_cert: str
    vnc_tls_key: str
    vnc_tls_hostname: str
    vnc_tls_anonymous: bool
    vnc_zero_copy: bool
    vnc_connect: str
    relay_lean_dispatch: bool
    relay_write_through: bool
    relay_websocket_send: bool
    relay_websocket_receive: bool
    relay_websocket_unmask: bool
    xvpvnc_native_wait: float
    xvpvnc_max_pending_per_address: int
    xvpvnc_max_pending: int
    xvpvnc_max_failures_per_instance: int  # no longer used (kept so older files load)
    xvpvnc_password_checks_per_second: float
    http_header_timeout: float
    http_idle_timeout: float
    http_max_pending_per_address: int
    http_max_pending: int
    state_dir: str
    novnc_dir: str
    xterm_dir: str
    serial_source: str
    serial_domains: tuple
    serial_log_dir: str
    serial_log_size: int
    serial_log_files: int
    serial_scrollback: int
    serial_viewer_queue: int
    serial_slow_viewer_grace: float
    serial_max_viewers: int
    lxd_listen: str
    lxd_socket_owner: str
    lxd_socket_group: str
    lxd_socket_mode: int
    lxd_listen_tls: str
    lxd_trusted_certificates: str

    @property
    def serial_log_path(self):
        """
        The directory of the serial console logs: C{serial_log_dir}, or C{STATE_DIR/serial}.
        """
        return self.serial_log_dir or os.path.join(self.state_dir, "serial")

    @property
    def vnc_tls_mode(self):
        """
        Which VeNCrypt subtypes the proxy may run toward QEMU: C{"x509"} when a CA is
        configured, C{"anonymous"} when C{tls_anonymous} is on, else C{None} (VeNCrypt is
        refused).
        """
        if self.vnc_tls_ca:
            return "x509"
        return "anonymous" if self.vnc_tls_anonymous else None

    # The URLs themselves are built by vncproxy.urls (ProxyContext.urls); these delegate to it.
    @property
    def console_base_url(self):
        return urls.console_base(self)

    @property
    def websocket_base_url(self):
        return urls.Urls(self).websocket_base

    @property
    def public_path_prefix(self):
        """
        The path of C{public_url} (C{"/n/node17"}), or C{""}: where this node's console listener
        appears on the public host.
        """
        return urlsplit(self.public_url).path.rstrip("/") if self.public_url else ""

    @property
    def listener_path_prefix(self):
        """
        The prefix the console listener's requests arrive with: the public prefix when the front
        door keeps it (C{[console] prefix = kept}), C{""} when it strips it.
        """
        return self.public_path_prefix if self.public_prefix_mode == "kept" else ""

    @property
    def xvpvnc_base_url(self):
        return urls.Urls(self).xvpvnc_base

    def native_vnc_url(self, password):
        return urls.Urls(self).vnc(password)


def _build(values, where):
    kwargs = {}
    for (section, key), (name, parse, default) in SCHEMA.items():
        raw = values.get((section, key), default)
        try:
            kwargs[name] = parse(raw.strip())
        except ValueError as e:
            raise ConfigError(f"{where}: [{section}] {key}: {e}") from None
    built = Config(**kwargs)
    _check_tls(built, where)
    if built.proxy_protocol and not built.proxy_trusted:
        raise ConfigError(f"{where}: [proxy] proxy_protocol: needs trusted (the addresses of "
                          "the proxies that send the header)")
    if built.trusted_issuers and not built.node_id:
        raise ConfigError(f"{where}: [tokens] trusted_issuers: needs node_id (the id signed "
                          "grants must name to be accepted here)")
    _check_lxd(built, where)
    return built


def _check_tls(c, where):
    if bool(c.vnc_tls_cert) != bool(c.vnc_tls_key):
        raise ConfigError(f"{where}: [vnc] tls_cert and tls_key: set both (a client "
                          "certificate and its key) or neither")
    if c.vnc_tls_cert and not c.vnc_tls_ca:
        raise ConfigError(f"{where}: [vnc] tls_cert: needs tls_ca (the CA that signed the "
                          "VNC servers' certificates)")
    if c.vnc_tls_hostname and not c.vnc_tls_ca:
        raise ConfigError(f"{where}: [vnc] tls_hostname: needs tls_ca")
    if c.vnc_tls_anonymous and c.vnc_tls_ca:
        raise ConfigError(f"{where}: [vnc] tls_anonymous: cannot be combined with tls_ca "
                          "(it would let an attacker downgrade certificate-verified TLS to "
                          "unauthenticated TLS)")


def _check_lxd(c, where):
    if c.lxd_listen_tls and not c.lxd_trusted_certificates:
        raise ConfigError(f"{where}: [lxd] listen_tls: needs trusted_certificates (the client "
                          "certificates allowed in)")


def _values_from_parser(parser, where):
    values = {}
    known_sections = {section for section, _ in SCHEMA}
    for section in parser.sections():
        if section not in known_sections:
            raise ConfigError(f"{where}: unknown section [{section}]")
        for key, value in parser.items(section):
            if (section, key) not in SCHEMA:
                raise ConfigError(f"{where}: [{section}] {key}: unknown key")
            values[(section, key)] = value
    return values


def _parser():
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    parser.optionxform = str  # keys are case-sensitive: "Token_TTL" is a typo, not an alias
    return parser


def from_string(text, where="<string>", overrides=()):
    """
    Build a L{Config} from INI text (for tests, and the body of L{load}).

    @param overrides: C{(section, key, value)} triples applied on top of the text.
    @raise ConfigError: on a syntax error, an unknown section or key, or a bad value.
    """
    parser = _parser()
    try:
        parser.read_string(text, source=where)
    except configparser.Error as e:
        raise ConfigError(f"{where}: {e}") from None
    values = _values_from_parser(parser, where)
    for section, key, value in overrides:
        if (section, key) not in SCHEMA:
            raise ConfigError(f"command line: [{section}] {key}: unknown key")
        values[(section, key)] = value
    return _build(values, where)


def load(path=None, overrides=()):
    """
    Load the configuration file at C{path}, or the built-in defaults when C{path} is C{None}.
    """
    if path is None:
        return from_string("", "<defaults>", overrides)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    return from_string(text, path, overrides)


def defaults(**changes):
    """
    The built-in defaults, with some fields replaced (for tests).
    """
    return replace(from_string("", "<defaults>"), **changes)


__all__ = ["Config", "ConfigError", "SCHEMA", "defaults", "from_string", "load"]
