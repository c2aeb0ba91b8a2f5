"""
Viewers and API calls run inside the container's network namespace (its listeners are on its
own loopback): C{nsenter -t LEADER -n -- python -m tests.hypervisor.probe COMMAND ARGS}, one
JSON object on stdout.

    vnc API_URL KEY INSTANCE           a grant, then RFB through the WebSocket of its href up
                                       to ServerInit: {"width", "height", "name"}
    serial API_URL KEY INSTANCE TEXT   a serial grant, then "echo TEXT" typed into the guest's
                                       shell and read back: {"output"}
    hold API_URL KEY INSTANCE          a VNC viewer held open until the service closes it:
                                       prints {"ready": true}, then {"close_code", "reason"}

The href names the host as the service derived it (public_url unset); the viewer reaches it
at the console listener's port on the container's loopback.
"""

import json
import sys
import time
from urllib.parse import urlsplit

import websocket

from tests.support import api
from tests.support.serialclient import Closed, SerialClient
from tests.support.viewer import RfbViewer, WebSocketPipe, close_status, open_websocket


def _out(obj):
    print(json.dumps(obj), flush=True)


def _href(api_url, key, instance, console_type):
    status, body = api.grant(api_url, key, instance, console_type)
    if status != 200:
        raise SystemExit(f"grant: {status} {body}")
    parts = urlsplit(body["href"])
    return parts._replace(netloc=f"127.0.0.1:{parts.port or 80}").geturl()


def vnc(api_url, key, instance):
    ws = open_websocket(_href(api_url, key, instance, "vnc"))
    init = RfbViewer(WebSocketPipe(ws)).handshake()
    ws.close()
    _out({"width": init.width, "height": init.height, "name": init.name})


def serial(api_url, key, instance, text):
    client = SerialClient(_href(api_url, key, instance, "serial"))
    client.type(b"\r")
    time.sleep(0.5)
    client.type(f"echo {text}-$((6*7))\r".encode())
    output = client.read_until(f"{text}-42".encode(), timeout=20)
    client.disconnect()
    _out({"output": output.decode("utf-8", "replace")})


def hold(api_url, key, instance):
    ws = open_websocket(_href(api_url, key, instance, "vnc"), timeout=60)
    RfbViewer(WebSocketPipe(ws)).handshake()
    _out({"ready": True})
    while True:
        try:
            opcode, data = ws.recv_data(control_frame=True)
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            _out({"close_code": None, "reason": "dropped"})
            return
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code, reason = close_status(data) or (None, "")
            _out({"close_code": code, "reason": reason})
            return


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    try:
        {"vnc": vnc, "serial": serial, "hold": hold}[command](*args)
    except Closed as e:
        _out({"error": f"closed: {e}"})
        sys.exit(1)
