"""
Console actions an operator (or a console's interactive holder) sends to a running instance:
what a request asks for, checked, and carried out through the L{IHypervisor} seam.

    {"action": "ctrl-alt-del"}                       Ctrl+Alt+Delete
    {"action": "sysrq", "key": "s"}                  Alt+SysRq+key (the kernel's magic SysRq)
    {"action": "nmi"}                                a non-maskable interrupt
    {"action": "send-keys", "keys": ["KEY_LEFTCTRL", "KEY_C"]}
                                                     up to 16 keys pressed together, by their
                                                     Linux names (linux/input-event-codes.h)

Keys go through C{virDomainSendKey} in the Linux key code set: pressed in the order given, held
L{HOLD_MS}, released.
"""

from dataclasses import dataclass

#: How long a key combination is held, in milliseconds (libvirt's own default is 100).
HOLD_MS = 100
#: libvirt's limit on keys sent at once (VIR_DOMAIN_SEND_KEY_MAX_KEYS).
MAX_KEYS = 16

_LETTERS = {"Q": 16, "W": 17, "E": 18, "R": 19, "T": 20, "Y": 21, "U": 22, "I": 23, "O": 24,
            "P": 25, "A": 30, "S": 31, "D": 32, "F": 33, "G": 34, "H": 35, "J": 36, "K": 37,
            "L": 38, "Z": 44, "X": 45, "C": 46, "V": 47, "B": 48, "N": 49, "M": 50}
_DIGITS = {str(n): 2 + (n - 1) % 10 for n in range(10)}  # KEY_1 = 2 ... KEY_9 = 10, KEY_0 = 11

#: Linux key names (without C{KEY_}) and their codes: the keys a console needs.
KEY_CODES = {
    **_LETTERS, **_DIGITS,
    "ESC": 1, "MINUS": 12, "EQUAL": 13, "BACKSPACE": 14, "TAB": 15, "LEFTBRACE": 26,
    "RIGHTBRACE": 27, "ENTER": 28, "LEFTCTRL": 29, "SEMICOLON": 39, "APOSTROPHE": 40,
    "GRAVE": 41, "LEFTSHIFT": 42, "BACKSLASH": 43, "COMMA": 51, "DOT": 52, "SLASH": 53,
    "RIGHTSHIFT": 54, "KPASTERISK": 55, "LEFTALT": 56, "SPACE": 57, "CAPSLOCK": 58,
    **{f"F{n}": 58 + n for n in range(1, 11)}, "F11": 87, "F12": 88,
    "NUMLOCK": 69, "SCROLLLOCK": 70, "KP7": 71, "KP8": 72, "KP9": 73, "KPMINUS": 74, "KP4": 75,
    "KP5": 76, "KP6": 77, "KPPLUS": 78, "KP1": 79, "KP2": 80, "KP3": 81, "KP0": 82, "KPDOT": 83,
    "KPENTER": 96, "RIGHTCTRL": 97, "KPSLASH": 98, "SYSRQ": 99, "RIGHTALT": 100, "HOME": 102,
    "UP": 103, "PAGEUP": 104, "LEFT": 105, "RIGHT": 106, "END": 107, "DOWN": 108,
    "PAGEDOWN": 109, "INSERT": 110, "DELETE": 111, "PAUSE": 119, "LEFTMETA": 125,
    "RIGHTMETA": 126, "COMPOSE": 127,
}

ACTIONS = ("ctrl-alt-del", "sysrq", "nmi", "send-keys")


class BadAction(ValueError):
    """
    The request does not name a valid action; the message says why (safe to show).
    """


@dataclass(frozen=True)
class Action:
    """
    A checked action: C{name} (one of L{ACTIONS}), the key codes to press (empty for C{nmi}),
    and C{detail} for logs (the SysRq key, the key names).
    """

    name: str
    keycodes: tuple = ()
    detail: str = ""

    def perform(self, hypervisor, instance):
        """
        Carry it out on C{instance}.

        @return: the L{IHypervisor} call's L{Deferred}.
        """
        if self.name == "nmi":
            return hypervisor.inject_nmi(instance)
        return hypervisor.send_keys(instance, list(self.keycodes), HOLD_MS)

    def describe(self):
        return f"{self.name} {self.detail}".strip()


def _code(name):
    if not isinstance(name, str) or not name.startswith("KEY_") or name[4:] not in KEY_CODES:
        raise BadAction(f"unknown key {str(name)[:24]!r} (Linux names such as KEY_LEFTCTRL)")
    return KEY_CODES[name[4:]]


def parse_action(body):
    """
    Check a request body.

    @param body: the decoded JSON object.
    @return: an L{Action}.
    @raise BadAction: when it is not one.
    """
    name = body.get("action")
    if name == "ctrl-alt-del":
        return Action(name, (KEY_CODES["LEFTCTRL"], KEY_CODES["LEFTALT"], KEY_CODES["DELETE"]))
    if name == "nmi":
        return Action(name)
    if name == "sysrq":
        key = body.get("key")
        if not isinstance(key, str) or len(key) != 1 or key.upper() not in KEY_CODES \
                or not key.isalnum() or not key.isascii():
            raise BadAction("sysrq needs a key: one letter or digit (e.g. \"s\")")
        return Action(name, (KEY_CODES["LEFTALT"], KEY_CODES["SYSRQ"],
                             KEY_CODES[key.upper()]), key.lower())
    if name == "send-keys":
        keys = body.get("keys")
        if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_KEYS:
            raise BadAction(f"send-keys needs keys: a list of 1 to {MAX_KEYS} key names")
        return Action(name, tuple(_code(k) for k in keys), "+".join(keys))
    raise BadAction("action must be one of " + ", ".join(ACTIONS))
