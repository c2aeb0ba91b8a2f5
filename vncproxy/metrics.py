"""
Prometheus metrics, collected at scrape time from the live objects (token store, session
registry) so the relay's hot path never touches a counter.
"""

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """
    @param tokens: the L{vncproxy.tokens.TokenStore}.
    @param sessions: the L{vncproxy.sessions.SessionRegistry}.
    """

    def __init__(self, tokens, sessions):
        self._tokens = tokens
        self._sessions = sessions
        self.refusals = {}  # reason -> count
        self._closed_bytes = {}  # (console_type, direction) -> bytes of ended sessions
        self.serial_bytes_captured = 0
        self._closed_spliced = 0  # bytes_spliced of ended VNC sessions
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.handshake_seconds = Histogram(
            "consoleproxy_vnc_handshake_seconds",
            "Time from connecting to the VM's VNC server to its security handshake completing.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry)

    def refused(self, reason):
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def session_closed(self, console_type, to_viewer, from_viewer, spliced=0):
        self._closed_spliced += spliced
        for direction, count in (("to_viewer", to_viewer), ("from_viewer", from_viewer)):
            key = (console_type, direction)
            self._closed_bytes[key] = self._closed_bytes.get(key, 0) + count

    def render(self):
        return generate_latest(self.registry)

    def collect(self):
        live = GaugeMetricFamily("consoleproxy_sessions", "Open console sessions.",
                                 labels=["console_type"])
        by_type = {"vnc": 0, "serial": 0}
        totals = dict(self._closed_bytes)
        spliced = self._closed_spliced
        for console_type, session in self._sessions.typed_sessions():
            by_type[console_type] = by_type.get(console_type, 0) + 1
            spliced += getattr(session, "bytes_spliced", 0)
            for direction in ("to_viewer", "from_viewer"):
                key = (console_type, direction)
                totals[key] = totals.get(key, 0) + getattr(session, "bytes_" + direction, 0)
        for console_type, count in sorted(by_type.items()):
            live.add_metric([console_type], count)
        yield live
        moved = CounterMetricFamily("consoleproxy_bytes", "Bytes relayed, by direction.",
                                    labels=["console_type", "direction"])
        for (console_type, direction), count in sorted(totals.items()):
            moved.add_metric([console_type, direction], count)
        yield moved
        refusals = CounterMetricFamily("consoleproxy_refusals", "Refused console connections.",
                                       labels=["reason"])
        for reason, count in sorted(self.refusals.items()):
            refusals.add_metric([reason], count)
        yield refusals
        for name, source, help_text in (
            ("consoleproxy_tokens_issued", self._tokens.issued, "Tokens issued."),
            ("consoleproxy_tokens_consumed", self._tokens.consumed, "Tokens redeemed."),
        ):
            family = CounterMetricFamily(name, help_text, labels=["console_type"])
            for console_type, count in sorted(source.items()):
                family.add_metric([console_type], count)
            yield family
        yield CounterMetricFamily("consoleproxy_tokens_expired", "Tokens that expired unused.",
                                  value=self._tokens.expired)
        yield CounterMetricFamily("consoleproxy_serial_bytes_captured",
                                  "Bytes of guest serial output captured to the logs.",
                                  value=self.serial_bytes_captured)
        yield CounterMetricFamily("consoleproxy_vnc_bytes_spliced",
                                  "Bytes sent to VNC viewers without a copy (splice), a part "
                                  "of consoleproxy_bytes.", value=spliced)
