"""
Read the console details out of a libvirt domain XML document. Pure: no libvirt, no Twisted.

What is read, from the live XML that C{virDomainGetXMLDesc(VIR_DOMAIN_XML_SECURE)} returns::

    <domain>
      <uuid>...</uuid>
      <devices>
        <serial type='pty'><source path='/dev/pts/3'/>...</serial>       serial PTY
        <console type='pty' tty='/dev/pts/3'>...</console>                 (fallback)
        <graphics type='vnc' port='5900' listen='127.0.0.1' passwd='...'> VNC endpoint
          <listen type='address' address='127.0.0.1'/>
        </graphics>
      </devices>
    </domain>

The VNC password only appears in secure XML; it is never put into an exception message.
"""

import uuid
import xml.etree.ElementTree as ET

from vncproxy.hypervisor._types import VncEndpoint

# Wildcard listen addresses are reached through the matching loopback address.
_WILDCARDS = {
    "": "127.0.0.1",
    "0.0.0.0": "127.0.0.1",
    "::": "::1",
    "[::]": "::1",
}
_DEFAULT_HOST = "127.0.0.1"


def canonical_uuid(text: str) -> str | None:
    """
    The canonical (lower case, with dashes) form of C{text} if it is a UUID written the usual way
    (36 characters, with dashes, any case), else C{None}.

    Both hypervisor implementations use this to decide whether an instance reference is looked
    up by UUID before it is looked up by name.
    """
    if not isinstance(text, str) or len(text) != 36 or text.count("-") != 4:
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def parse_domain_xml(xml: str) -> tuple[VncEndpoint | None, str | None]:
    """
    Find a domain's VNC endpoint and serial PTY path in its XML description.

    @param xml: a C{<domain>} document as libvirt returns it.
    @return: C{(vnc, serial_pty)}: the first VNC graphics device as a L{VncEndpoint} (C{None}
        when there is none, or it has neither a TCP port nor a UNIX socket), and the host path of
        the domain's serial PTY (C{None} when there is none).
    @raise ValueError: when C{xml} is not a well-formed C{<domain>} document.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        # ParseError's message gives a position, never the document's text.
        raise ValueError(f"domain XML is not well-formed: {e}") from None
    except TypeError:
        raise ValueError(f"domain XML must be a string, not {type(xml).__name__}") from None
    if root.tag != "domain":
        raise ValueError("domain XML does not have a <domain> root element")
    devices = root.find("devices")
    if devices is None:
        return None, None
    return _vnc(devices), _serial(devices)


def _vnc(devices: ET.Element) -> VncEndpoint | None:
    graphics = next(
        (g for g in devices.findall("graphics") if g.get("type") == "vnc"), None
    )
    if graphics is None:
        return None
    password = graphics.get("passwd")
    listens = graphics.findall("listen")
    port = _port(graphics.get("port"))
    if port is not None:
        return VncEndpoint(host=_host(graphics, listens), port=port, password=password)

    socket = graphics.get("socket") or next(
        (
            listen.get("socket")
            for listen in listens
            if listen.get("type") == "socket" and listen.get("socket")
        ),
        None,
    )
    if socket:
        return VncEndpoint(socket=socket, password=password)
    return None


def _port(value: str | None) -> int | None:
    """
    A usable TCP port from a C{port} attribute: missing, C{-1} (not allocated) and nonsense give
    C{None}.
    """
    if value is None:
        return None
    try:
        port = int(value)
    except ValueError:
        return None
    if 0 < port < 65536:
        return port
    return None


def _host(graphics: ET.Element, listens: list[ET.Element]) -> str:
    address = graphics.get("listen")
    if address is None:
        for listen in listens:
            if listen.get("type") == "address":
                address = listen.get("address", "")
                break
            # 'network' (an address of a libvirt network) or anything unknown: loopback.
            return _DEFAULT_HOST
    if address is None:
        return _DEFAULT_HOST
    address = address.strip()
    return _WILDCARDS.get(address, address)


def _serial(devices: ET.Element) -> str | None:
    """
    The first serial PTY's path; then a C{type='dev'} serial's (libvirt's test driver keeps
    those, and drops PTY paths); then a PTY console's.
    """
    serials = devices.findall("serial")
    for kind in ("pty", "dev"):
        first = next((s for s in serials if s.get("type") == kind), None)
        if first is not None:
            path = _source_path(first)
            if path:
                return path
    console = next((c for c in devices.findall("console") if c.get("type") == "pty"), None)
    if console is not None:
        return _source_path(console) or console.get("tty") or None
    return None


def _source_path(device: ET.Element) -> str | None:
    source = device.find("source")
    if source is not None and source.get("path"):
        return source.get("path")
    return None
