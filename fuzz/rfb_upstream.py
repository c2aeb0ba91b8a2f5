"""
atheris harness: tests.fuzz.targets.rfb_upstream (see fuzz/README.md).
"""

import _harness

if __name__ == "__main__":
    _harness.run("rfb_upstream")
