"""
atheris harness: tests.fuzz.targets.connect_request (see fuzz/README.md).
"""

import _harness

if __name__ == "__main__":
    _harness.run("connect_request")
