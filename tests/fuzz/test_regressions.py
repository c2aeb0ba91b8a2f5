"""
Replays the crashers the fuzzers found (tests/fuzz/regressions/TARGET/*: raw inputs as atheris
wrote them, or minimal ones written by hand) through the same targets: each must now end in a
documented outcome.
"""

import os

import pytest

from tests.fuzz import http_targets, targets

TARGETS = {**targets.TARGETS, **http_targets.TARGETS}

HERE = os.path.join(os.path.dirname(__file__), "regressions")
VECTORS = sorted((name, entry) for name in os.listdir(HERE)
                 for entry in os.listdir(os.path.join(HERE, name)))


def test_every_vector_names_a_target():
    """Each regression directory is a known target and holds at least one vector."""
    assert VECTORS
    assert {name for name, _ in VECTORS} <= set(TARGETS)


@pytest.mark.parametrize("name, entry", VECTORS, ids=[f"{n}/{e}" for n, e in VECTORS])
def test_crasher_replays_cleanly(name, entry):
    """A kept crasher now ends in a documented outcome (a refusal, not an exception)."""
    with open(os.path.join(HERE, name, entry), "rb") as f:
        TARGETS[name](f.read())
