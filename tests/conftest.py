"""
Settings for the whole suite.

Hypothesis' default 200 ms deadline per example fails tests spuriously on a loaded machine (two
cores shared with libvirt guests and other test runs); the examples here are small, so time is
not what they test.
"""

from hypothesis import settings

settings.register_profile("consoleproxy", deadline=None)
settings.load_profile("consoleproxy")
