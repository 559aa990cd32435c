"""The sshd we pose as: every fact about its behaviour that SandTrap reproduces, in one place.

Owns the measured description of each persona (banner, KEXINIT lists, EXT_INFO, auth methods,
disconnect and refusal texts, what runs for a login, AcceptEnv) and the Debian package version
to banner mapping. Pure data: translating it into asyncssh options is ssh/persona.py's. Measured
values and the differences we cannot remove are in docs/fingerprinting.md.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from sandtrap.config import SSHConfig


@dataclass(frozen=True)
class Persona:
    """One sshd build as seen from the network, before and during authentication."""

    name: str
    # Identification string without "SSH-2.0-" and CRLF (RFC 4253 section 4.2).
    software_version: str
    # KEXINIT name-lists in the server's preference order; `kex_pseudo_algs` follow `kex_algs`.
    kex_algs: tuple[str, ...]
    kex_pseudo_algs: tuple[str, ...]
    host_key_algs: tuple[str, ...]
    encryption_algs: tuple[str, ...]
    mac_algs: tuple[str, ...]
    compression_algs: tuple[str, ...]
    # SSH_MSG_EXT_INFO (RFC 8308), sent after the first NEWKEYS when the client offers ext-info-c.
    ext_info: tuple[tuple[str, str], ...]
    auth_methods: tuple[str, ...]
    max_auth_tries: int
    login_grace_seconds: float
    # OpenSSH's packet_disconnect() texts and its replies to a bad identification line.
    too_many_auth_failures_text: str = "Too many authentication failures"
    invalid_ident_text: str = "Invalid SSH identification string."
    version_mismatch_text: str = "Protocol major versions differ."
    # sshd's reply to a refused direct-tcpip open (serverloop.c: errmsg NULL -> "open failed").
    forward_refused_text: str = "open failed"
    # What runs for `subsystem sftp` (sshd_config `Subsystem sftp`).
    sftp_server: str = "/usr/lib/openssh/sftp-server"
    # sshd runs the user's shell: as a login shell for `shell`, with -c for `exec` (session.c).
    # For a login, Debian's pam_motd first prints the dynamic motd (update-motd.d) and
    # /etc/motd; with a PTY, sshd's PrintLastLog adds "Last login: <ctime> from <host>" from
    # lastlog (read before this login is recorded: sandbox/realism.py writes lastlog once the
    # shell runs). The shell then runs as "-bash", the name sshd gives a login shell, which is
    # what `ps` shows on a server.
    login_shell: tuple[str, ...] = (
        "/bin/bash",
        "-c",
        "run-parts --lsbsysinit /etc/update-motd.d 2>/dev/null; "
        "[ -r /etc/motd ] && cat /etc/motd; "
        '[ -t 1 ] && lastlog -u "$(id -un)" 2>/dev/null | awk \'NR == 2 && NF >= 9 '
        '{printf "Last login: %s %s %2d %s %s from %s\\n", $4, $5, $6, $7, $9, $3}\'; '
        "exec -a -bash /bin/bash",
    )
    command_shell: tuple[str, ...] = ("/bin/bash", "-c")
    # sshd_config AcceptEnv: the client environment passed to the shell (Debian: LANG LC_*).
    accept_env: tuple[str, ...] = ("LANG", "LC_*")
    # What bash prints (to stderr, which is the PTY) when TMOUT expires at the prompt (eval.c
    # alrm_catcher), with the PTY's ONLCR; then the shell exits and sshd closes the channel.
    # The idle timeout ends shells this way.
    idle_logout_text: bytes = b"\atimed out waiting for input: auto-logout\r\n"
    # What sshd writes before closing a connection that MaxStartups drops (sshd.c).
    max_startups_text: bytes = b"Exceeded MaxStartups\r\n"
    # Debian's pam_unix delays a failed password by about 2 s (pam_faildelay); its jitter.
    auth_failure_jitter: float = 0.25

    @property
    def identification(self) -> str:
        """The identification line as sent, without CRLF."""
        return "SSH-2.0-" + self.software_version

    @property
    def wire_kex_algs(self) -> tuple[str, ...]:
        """The kex name-list exactly as it appears in the server KEXINIT."""
        return self.kex_algs + self.kex_pseudo_algs

    @property
    def server_sig_algs(self) -> tuple[str, ...]:
        for name, value in self.ext_info:
            if name == "server-sig-algs":
                return tuple(value.split(","))
        return ()


# Measured on the wire from Debian 12's sshd (openssh-server 1:9.2p1-2+deb12u10) with Debian's
# default sshd_config and its three default host keys (RSA 3072, ECDSA P-256, Ed25519).
DEBIAN12 = Persona(
    name="debian12",
    software_version="OpenSSH_9.2p1 Debian-2+deb12u10",
    kex_algs=(
        "sntrup761x25519-sha512",
        "sntrup761x25519-sha512@openssh.com",
        "curve25519-sha256",
        "curve25519-sha256@libssh.org",
        "ecdh-sha2-nistp256",
        "ecdh-sha2-nistp384",
        "ecdh-sha2-nistp521",
        "diffie-hellman-group-exchange-sha256",
        "diffie-hellman-group16-sha512",
        "diffie-hellman-group18-sha512",
        "diffie-hellman-group14-sha256",
    ),
    # OpenSSH 9.2 servers send no ext-info-s (that came with 9.6); strict kex is the Terrapin fix.
    kex_pseudo_algs=("kex-strict-s-v00@openssh.com",),
    host_key_algs=("rsa-sha2-512", "rsa-sha2-256", "ecdsa-sha2-nistp256", "ssh-ed25519"),
    encryption_algs=(
        "chacha20-poly1305@openssh.com",
        "aes128-ctr",
        "aes192-ctr",
        "aes256-ctr",
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
    ),
    mac_algs=(
        "umac-64-etm@openssh.com",
        "umac-128-etm@openssh.com",
        "hmac-sha2-256-etm@openssh.com",
        "hmac-sha2-512-etm@openssh.com",
        "hmac-sha1-etm@openssh.com",
        "umac-64@openssh.com",
        "umac-128@openssh.com",
        "hmac-sha2-256",
        "hmac-sha2-512",
        "hmac-sha1",
    ),
    compression_algs=("none", "zlib@openssh.com"),
    ext_info=(
        (
            "server-sig-algs",
            "ssh-ed25519,sk-ssh-ed25519@openssh.com,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,"
            "ecdsa-sha2-nistp521,sk-ecdsa-sha2-nistp256@openssh.com,"
            "webauthn-sk-ecdsa-sha2-nistp256@openssh.com,ssh-dss,ssh-rsa,rsa-sha2-256,"
            "rsa-sha2-512",
        ),
        ("publickey-hostbound@openssh.com", "0"),
    ),
    # Debian's sshd_config sets KbdInteractiveAuthentication no, so keyboard-interactive is not
    # offered at all.
    auth_methods=("publickey", "password"),
    max_auth_tries=6,
    login_grace_seconds=120.0,
)

PERSONAS: dict[str, Persona] = {DEBIAN12.name: DEBIAN12}


def persona_for(config: SSHConfig) -> Persona:
    """The configured persona with the operator's overrides (banner, MaxAuthTries, grace time)."""
    base = PERSONAS[config.persona]
    return dataclasses.replace(
        base,
        software_version=config.banner_version or base.software_version,
        max_auth_tries=config.max_auth_tries,
        login_grace_seconds=config.login_grace_seconds,
    )


_DPKG_VERSION = re.compile(r"^\d+:(?P<upstream>[\w.]+)-(?P<revision>[\w.+~]+)$")


def banner_from_package(version: str, vendor: str = "Debian") -> str | None:
    """`1:9.2p1-2+deb12u7` -> `OpenSSH_9.2p1 Debian-2+deb12u7` (what Debian's sshd sends)."""
    match = _DPKG_VERSION.match(version.strip())
    if match is None:
        return None
    return f"OpenSSH_{match['upstream']} {vendor}-{match['revision']}"


def package_version(dpkg_status: str, package: str) -> str | None:
    """The Version of an installed package from the text of /var/lib/dpkg/status."""
    for stanza in dpkg_status.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Package") == package and "installed" in fields.get("Status", ""):
            return fields.get("Version")
    return None


__all__ = [
    "DEBIAN12",
    "PERSONAS",
    "Persona",
    "banner_from_package",
    "package_version",
    "persona_for",
]
