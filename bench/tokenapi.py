"""
The bench's token client: console tokens minted through the service's token API
(C{POST /v1/instances/ID/console_access_token}) on one kept-alive HTTP connection, and the
refusal it raises when the API answers anything but 200.
"""

import http.client
import json


class TokenApi:
    """
    Mints console tokens through the service's API (one kept-alive HTTP connection).
    """

    def __init__(self, api_url, key, instance):
        host, _, port = api_url.split("://", 1)[1].partition(":")
        self._host, self._port = host, int(port)
        self._key = key
        self._instance = instance
        self._http = None

    def mint(self, console_type="vnc", read_only=False):
        """
        A console token for this API's instance.
        """
        extra = {"read_only": True} if read_only else {}
        return self.grant(console_type=console_type, **extra)["access_token"]

    def grant(self, instance=None, console_type="vnc", **body):
        """
        The API's whole answer (C{access_token}, C{href}, ...) to a grant for C{instance}
        (default: this API's), with C{body}'s extra fields (C{read_only}, C{force}).

        @raise GrantRefused: when the API answers anything but 200.
        """
        body = json.dumps(dict(body, console_type=console_type))
        instance = instance or self._instance
        for attempt in (1, 2):
            if self._http is None:
                self._http = http.client.HTTPConnection(self._host, self._port, timeout=30)
            try:
                self._http.request("POST", f"/v1/instances/{instance}/console_access_token",
                                   body, {"X-Auth-Token": self._key,
                                          "Content-Type": "application/json"})
                response = self._http.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                self._http.close()
                self._http = None
                if attempt == 2:
                    raise
                continue
            if response.status != 200:
                raise GrantRefused(response.status, payload[:200])
            return json.loads(payload)

    def close(self):
        """
        Close the kept-alive connection (a later grant opens another).
        """
        if self._http is not None:
            self._http.close()
            self._http = None


class GrantRefused(RuntimeError):
    """
    The token API answered C{status} (not 200).
    """

    def __init__(self, status, payload):
        super().__init__(f"token API answered {status}: {payload!r}")
        self.status = status

