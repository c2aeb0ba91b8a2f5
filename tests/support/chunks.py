"""
Chunking helpers for sans-IO tests: the same bytes delivered cut at every given point.
"""


def split(data, cuts):
    """C{data} cut at the offsets C{cuts} (any order, repeats ignored) into consecutive chunks."""
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:])]
