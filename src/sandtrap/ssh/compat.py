"""The asyncssh internals SandTrap relies on, listed in one place for the canary test.

Each entry names an asyncssh private (or undocumented) name and our module that uses it;
tests/unit/test_asyncssh_canary.py fails, naming both, when an asyncssh release drops one. A new
use of an asyncssh internal is added here in the same change. Imports nothing of asyncssh.
"""

from __future__ import annotations

from dataclasses import dataclass

# The asyncssh release these names were read from; pyproject.toml pins asyncssh to its series.
TESTED_ASYNCSSH = "2.24.1"

_CONNECTION = "sandtrap.ssh.connection"
_CHANNEL = "sandtrap.ssh.channel"
_KEXALGS = "sandtrap.ssh.kexalgs"
_HOSTBOUND = "sandtrap.ssh.hostbound"


@dataclass(frozen=True)
class Internal:
    """`name` in asyncssh's `module` (on class `owner` when given), used by our module `user`.

    A name on a class is a class attribute or method, or an instance attribute its `__init__` (or
    a base class) assigns; an override is listed because asyncssh stops calling it when renamed.
    """

    module: str
    owner: str
    name: str
    user: str
    why: str


@dataclass(frozen=True)
class Signature:
    """The leading parameters (after self) of a callable we call or extend with positional args."""

    module: str
    qualname: str
    parameters: tuple[str, ...]
    user: str


def _on(module: str, owner: str, user: str, why: str, *names: str) -> tuple[Internal, ...]:
    return tuple(Internal(module, owner, name, user, why) for name in names)


INTERNALS: tuple[Internal, ...] = (
    # ssh/connection.py: PersonaServerConnection (persona wire details, MaxAuthTries, HASSH).
    *_on(
        "asyncssh.connection",
        "SSHServerConnection",
        _CONNECTION,
        "overridden",
        "_get_extra_kex_algs",
        "process_packet",
        "_send_ext_info",
        "_recv_version",
        "_send_disconnect",
        "_finish_userauth",
        "send_userauth_failure",
    ),
    *_on(
        "asyncssh.connection",
        "SSHServerConnection",
        _CONNECTION,
        "read or set",
        "_server_host_keys",
        "_server_host_key_algs",
        "_owner",
        "_peer_addr",
        "_inpbuf",
        "_send",
        "_force_close",
        "send_packet",
    ),
    # ssh/channel.py: create_session passes the connection's channel settings on, as asyncssh's
    # create_server_channel does; the channel and stream session subclasses refuse requests.
    *_on(
        "asyncssh.connection",
        "SSHServerConnection",
        _CHANNEL,
        "passed to SSHServerChannel",
        "_loop",
        "_allow_pty",
        "_line_editor",
        "_line_echo",
        "_line_history",
        "_max_line_length",
        "_window",
        "_max_pktsize",
        "create_task",
    ),
    *_on(
        "asyncssh.channel",
        "SSHServerChannel",
        _CHANNEL,
        "overridden",
        "_process_x11_req_request",
        "_process_auth_agent_req_at_openssh_dot_com_request",
    ),
    *_on(
        "asyncssh.stream",
        "SSHServerStreamSession",
        _CHANNEL,
        "read by session_started",
        "_chan",
        "_conn",
        "session_started",
    ),
    # ssh/kexalgs.py: sntrup761x25519 and OpenSSH's group exchange in asyncssh's kex registry.
    *_on(
        "asyncssh.kex",
        "",
        _KEXALGS,
        "kex registry",
        "_kex_handlers",
        "register_kex_alg",
        "get_kex_algs",
    ),
    *_on(
        "asyncssh.kex_dh",
        "",
        _KEXALGS,
        "kex handlers and fallback groups",
        "_KexHybridECDH",
        "_KexDHGex",
        "_KexDHBase",
        "_group14_g",
        "_group14_p",
        "_group16_g",
        "_group16_p",
        "_group18_g",
        "_group18_p",
        "MSG_KEX_DH_GEX_REQUEST",
        "MSG_KEX_DH_GEX_GROUP",
        "MSG_KEX_DH_GEX_INIT",
        "MSG_KEX_DH_GEX_REPLY",
    ),
    *_on(
        "asyncssh.kex_dh",
        "_KexDHGex",
        _KEXALGS,
        "the server side of GEX",
        "_process_request",
        "_process_group",
        "_process_init",
        "_process_reply",
        "_compute_server_shared",
        "_init_group",
        "_packet_handlers",
        "_group_type",
        "_gex_data",
        "_conn",
        "_p",
        "_g",
        "_e",
        "_f",
        "send_packet",
    ),
    # ssh/hostbound.py: publickey-hostbound-v00@openssh.com as a server auth handler (issue 19).
    *_on(
        "asyncssh.auth",
        "",
        _HOSTBOUND,
        "server auth handler table",
        "_server_auth_handlers",
        "_ServerPublicKeyAuth",
        "MSG_USERAUTH_PK_OK",
    ),
    *_on(
        "asyncssh.auth",
        "_ServerPublicKeyAuth",
        _HOSTBOUND,
        "the publickey handler we extend",
        "_start",
        "_conn",
        "_username",
        "send_success",
        "send_failure",
        "send_packet",
    ),
    *_on(
        "asyncssh.connection",
        "SSHServerConnection",
        _HOSTBOUND,
        "the host key the request must name, the key check",
        "get_server_host_key",
        "validate_public_key",
    ),
    *_on(
        "asyncssh.public_key",
        "SSHKeyPair",
        _HOSTBOUND,
        "the host key's blob",
        "public_data",
    ),
    *_on(
        "asyncssh.crypto.pq",
        "PQKey",
        _KEXALGS,
        "the KEM interface _KexHybridECDH calls",
        "pubkey_bytes",
        "privkey_bytes",
        "ciphertext_bytes",
        "secret_bytes",
        "get_public",
        "encaps",
        "decaps",
    ),
)

SIGNATURES: tuple[Signature, ...] = (
    Signature(
        "asyncssh.channel",
        "SSHServerChannel.__init__",
        (
            "conn",
            "loop",
            "allow_pty",
            "line_editor",
            "line_echo",
            "line_history",
            "max_line_length",
            "encoding",
            "errors",
            "window",
            "max_pktsize",
        ),
        _CHANNEL,
    ),
    Signature(
        "asyncssh.connection", "SSHServerConnection.__init__", ("loop", "options"), _CONNECTION
    ),
    Signature(
        "asyncssh.kex_dh",
        "_KexHybridECDH.__init__",
        ("alg", "conn", "hash_alg", "pq_class", "pq_alg_name", "ecdh_class"),
        _KEXALGS,
    ),
    Signature(
        "asyncssh.kex",
        "register_kex_alg",
        ("alg", "handler", "hash_alg", "args", "default"),
        _KEXALGS,
    ),
)

__all__ = ["INTERNALS", "SIGNATURES", "TESTED_ASYNCSSH", "Internal", "Signature"]
