"""
What a process costs, read from /proc: resident memory and CPU time, for one process or for a
process and all its descendants (websockify forks one child per connection).
"""

import os

_TICK = os.sysconf("SC_CLK_TCK")


def rss(pid):
    """
    Resident set size in bytes (VmRSS of /proc/PID/status).
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def pss(pid):
    """
    Proportional set size in bytes (shared pages divided among their sharers): the fair way
    to add up forked children's memory.
    """
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no Pss for pid {pid}")


def cpu_seconds(pid):
    """
    User + system CPU time of the process, in seconds.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICK


def run_delay(pid):
    """
    Seconds the process's main thread spent runnable but waiting for a CPU (/proc/PID/schedstat):
    on a shared machine, the time it was held back by others.
    """
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def descendants(pid):
    """
    C{pid} and every process below it.
    """
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, ()))
    return found


def tree_total(pid, measure):
    """
    C{measure(p)} summed over C{pid} and its descendants (processes that vanish are skipped).
    """
    total = 0
    for p in descendants(pid):
        try:
            total += measure(p)
        except (OSError, ValueError):
            pass
    return total


def descriptors(pid):
    """
    How many descriptors process C{pid} has open.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))
