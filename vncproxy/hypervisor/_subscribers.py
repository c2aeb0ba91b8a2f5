"""
Lifecycle-event subscribers, shared by the real and the fake hypervisor so that both deliver
events the same way.
"""

from twisted.logger import Logger


class Subscribers:
    """
    A set of listeners; a listener that raises is logged and never stops delivery to the rest.
    """

    _log = Logger()

    def __init__(self):
        self._listeners = {}

    def __bool__(self):
        return bool(self._listeners)

    def add(self, listener):
        """
        @return: a no-argument callable that removes C{listener} (harmless to call twice).
        """
        token = object()
        self._listeners[token] = listener
        return lambda: self._listeners.pop(token, None)

    def deliver(self, event):
        for listener in list(self._listeners.values()):
            try:
                listener(event)
            except Exception:
                self._log.failure("hypervisor event listener {listener!r} failed on {event!r}",
                                  listener=listener, event=event)
