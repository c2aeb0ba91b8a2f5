from setuptools import setup

# Floors are Debian 12's own packages (the .deb depends on them). Twisted and Autobahn have an
# upper bound too: the relay's fast paths (vncproxy/relay/) use their private names, checked at
# start; constraints-tested.txt records the newest versions the whole suite passed on.
setup(
    name="consoleproxy",
    version="0.1.1",
    description="Hypervisor-side console proxy for virtual machines (VNC over WebSocket, serial)",
    packages=["vncproxy", "vncproxy.rfb", "vncproxy.web", "vncproxy.hypervisor", "vncproxy.serial",
              "vncproxy.lxd", "vncproxy.relay", "twisted.plugins"],
    # The web clients: our pages, and the committed build of tools/webclients.sh (xterm.js, and
    # noVNC's library as the fallback for hosts without the system package novnc).
    package_data={
        "vncproxy.web": ["openapi.json", "static/*.html", "static/serial/*", "static/console/*", "static/vendor/**/*"],
        "twisted": ["plugins/consoleproxy.py"],
    },
    python_requires=">=3.11",
    install_requires=[
        "twisted[tls]>=22.4,<27",
        "autobahn>=22.7,<27",
        "pyopenssl>=23.0",
        "service-identity>=18.1",
        "libvirt-python>=9.0",
        "zope.interface>=5.5",
        "cryptography>=38",
        "prometheus-client>=0.16",
    ],
    extras_require={
        "test": [
            "pytest>=7.2",
            "pytest-twisted>=1.13",
            "ruff==0.8.6",  # .ci/run lints with it (ruff.toml)
            "hypothesis>=6.67",
            "websocket-client>=1.6",
            "vncdotool>=1.2",
            # The LXD console API's e2e tests (pylxd 2.4 needs cryptography 46; 2.3.9 runs on
            # Debian 12's packages too: tools/testbed.sh).
            "pylxd==2.3.9",
            # Browser tests drive Debian's chromium; never "playwright install".
            "playwright>=1.48",
        ],
        # python -m bench --setup installs these into .bench-venv (websockify is the
        # incumbent the benchmark compares against; py-spy profiles the service).
        "bench": [
            "websockify",
            "py-spy",
        ],
    },
    zip_safe=False,
)
