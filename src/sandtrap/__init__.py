"""SandTrap: a high-interaction SSH honeypot with real shells in disposable, hardened containers."""

__version__ = "0.1.0"
