"""The SSH front door: listeners, persona, host keys, hooks. asyncssh is imported only here."""

from sandtrap.ssh.server import SSHFront, start_ssh_server

__all__ = ["SSHFront", "start_ssh_server"]
