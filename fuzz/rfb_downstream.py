"""
atheris harness: tests.fuzz.targets.rfb_downstream (see fuzz/README.md).
"""

import _harness

if __name__ == "__main__":
    _harness.run("rfb_downstream")
