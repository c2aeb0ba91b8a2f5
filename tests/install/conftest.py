import os

# Run by tools/package-test with CONSOLEPROXY_INSTALL_TEST=1; a plain pytest run never builds
# or installs anything.
if os.environ.get("CONSOLEPROXY_INSTALL_TEST") != "1":
    collect_ignore_glob = ["test_*.py"]
