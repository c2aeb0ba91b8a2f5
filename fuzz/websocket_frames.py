"""
atheris harness: tests.fuzz.targets.websocket_frames, the differential target of the WebSocket
receive fast path (see fuzz/README.md).
"""

import _harness

if __name__ == "__main__":
    _harness.run("websocket_frames")
