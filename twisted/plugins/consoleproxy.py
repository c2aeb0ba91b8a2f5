from twisted.application.service import ServiceMaker

consoleproxy = ServiceMaker(
    "consoleproxy",
    "vncproxy.tap",
    "VM console proxy: token API, WebSocket VNC and serial consoles, xvpvnc.",
    "consoleproxy",
)
