"""
atheris harness: tests.fuzz.http_targets.websocket_upgrade (see fuzz/README.md).
"""

import _harness

if __name__ == "__main__":
    from tests.fuzz import http_targets

    _harness.run("websocket_upgrade", http_targets.TARGETS["websocket_upgrade"], http_targets.SEEDS["websocket_upgrade"])
