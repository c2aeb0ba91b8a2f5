"""
Grants and console URLs on a test proxy: the real-socket one of tests/integration/conftest.py
or L{tests.support.memory.MemoryProxy}, each of which says how it calls the token API
(C{grant(instance, console_type, **extra)} answering C{(status, body)}).
"""


class GrantsAndUrls:
    """Mixed into a test proxy that has C{grant}, C{service} and C{ws_url}."""

    def granted(self, instance="vm1", console_type="vnc", **extra):
        """The body of a grant that must succeed."""
        status, body = self.grant(instance, console_type, **extra)
        assert status == 200, body
        return body

    def href(self, body):
        """The grant's console URL, on this proxy's console listener."""
        return body["href"].replace(self.service.ctx.config.websocket_base_url, self.ws_url)
