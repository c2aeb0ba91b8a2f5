"""
What every measure shares: the report's L{Row}, L{Skip}, percentiles, the rotation of targets
between repeated runs, the serving process's CPU, and many sessions opened at once.
"""

import asyncio
import statistics
from dataclasses import dataclass, field

from bench import proc

KEYSTROKE = b"k" * 16


class Skip(Exception):
    """
    A measure (or one target of it) cannot run in this build; the message says why.
    """


@dataclass
class Row:
    """
    One line of the report.

    @ivar values: target name -> list of per-run values.
    @ivar better: C{"higher"} or C{"lower"}: which way is good.
    @ivar target: C{(text, check)} where C{check(row)} returns True, False or None (not
        applicable in this run).
    """

    measure: str
    unit: str
    better: str
    values: dict = field(default_factory=dict)
    target: tuple = ("", None)
    note: str = ""

    def add(self, name, value):
        self.values.setdefault(name, []).append(value)

    def median(self, name):
        values = self.values.get(name)
        return statistics.median(values) if values else None


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def rotations(targets, repeats):
    for r in range(repeats):
        k = r % len(targets)
        yield targets[k:] + targets[:k]


def server_cpu(bench, name):
    """
    CPU seconds used so far by the process serving target C{name} (None for direct).
    """
    pid = bench.server_pid(name)
    if pid is None:
        return None
    return proc.tree_total(pid, proc.cpu_seconds)



async def open_many(target, tickets, parallel=32, rfb=True):
    gate = asyncio.Semaphore(parallel)
    conns = []

    async def one(ticket):
        async with gate:
            conns.append(await target.aconnect(ticket, rfb=rfb))

    results = await asyncio.gather(*(one(t) for t in tickets), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    return conns, errors



__all__ = ["KEYSTROKE", "Row", "Skip", "open_many", "percentile", "rotations", "server_cpu"]
