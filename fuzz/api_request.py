"""
atheris harness: tests.fuzz.http_targets.api_request (see fuzz/README.md).
"""

import _harness

if __name__ == "__main__":
    from tests.fuzz import http_targets

    _harness.run("api_request", http_targets.TARGETS["api_request"], http_targets.SEEDS["api_request"])
