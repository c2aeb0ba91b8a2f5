"""
Shared start-up of the atheris harnesses: the repository root on sys.path, the seed corpus
written once, then libFuzzer's main loop over one target of L{tests.fuzz.targets}.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run(name, target=None, seeds=None):
    """
    Fuzz C{tests.fuzz.targets.TARGETS[name]} (or C{target}) with atheris.

    The corpus is fuzz/corpus/NAME (created with the seed transcripts when missing) unless the
    command line names corpus directories; crashers are written where C{-artifact_prefix}
    says (the README suggests tests/fuzz/regressions/NAME/, which the suite replays).
    """
    import atheris

    from tests.fuzz import targets

    # Everything loaded, the standard library included (urllib.parse, json, http.cookies are
    # part of what our parsers do): coverage feedback reaches into it.
    atheris.instrument_all()
    target = target or targets.TARGETS[name]
    seeds = seeds if seeds is not None else targets.SEEDS.get(name, [])
    argv = list(sys.argv)
    if not any(not arg.startswith("-") for arg in argv[1:]):
        corpus = os.path.join(ROOT, "fuzz", "corpus", name)
        if not os.path.isdir(corpus):
            os.makedirs(corpus)
            for number, seed in enumerate(seeds):
                with open(os.path.join(corpus, f"seed-{number}"), "wb") as f:
                    f.write(seed)
        argv.append(corpus)
    atheris.Setup(argv, target)
    atheris.Fuzz()
