"""consoleproxy: a hypervisor-side console proxy for virtual machines."""

__version__ = "0.1.1"
