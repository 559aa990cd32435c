"""OpenSSH's `publickey-hostbound-v00@openssh.com` user-auth method, registered with asyncssh once.

OpenSSH clients (8.9 and later) sign public-key requests with this method when EXT_INFO carries
`publickey-hostbound@openssh.com`, which our persona sends as sshd does. asyncssh has no handler,
so without this one the signed request of a key the policy accepted fails and the key is unseen.
The request is `publickey`'s with the server's host key after the key blob (OpenSSH PROTOCOL,
"Public key authentication binding"); its internals are listed in ssh/compat.py.
"""

from __future__ import annotations

from asyncssh import auth as _auth
from asyncssh.packet import SSHPacket, String

METHOD = b"publickey-hostbound-v00@openssh.com"


class _ServerHostboundAuth(_auth._ServerPublicKeyAuth):
    """`publickey` plus the host key the client saw; refused when that is not ours (as sshd)."""

    async def _start(self, packet: SSHPacket) -> None:
        sig_present = packet.get_boolean()
        algorithm = packet.get_string()
        key_data = packet.get_string()
        host_key = packet.get_string()
        if sig_present:
            # The signature covers the session id and the request up to here, host key included.
            msg = packet.get_consumed_payload()
            signature = packet.get_string()
        else:
            msg = b""
            signature = b""
        packet.check_end()
        own = self._conn.get_server_host_key()
        if own is None or host_key != own.public_data:
            self.send_failure()
            return
        if await self._conn.validate_public_key(self._username, key_data, msg, signature):
            if sig_present:
                await self.send_success()
            else:
                self.send_packet(_auth.MSG_USERAUTH_PK_OK, String(algorithm), String(key_data))
        else:
            self.send_failure()


def enable_hostbound_auth() -> None:
    """Register the server side of the method (idempotent).

    Only the server table learns it: the method list in USERAUTH_FAILURE stays
    `publickey,password`, as sshd sends (it treats the method as a synonym of `publickey`).
    """
    _auth._server_auth_handlers[METHOD] = _ServerHostboundAuth


__all__ = ["METHOD", "enable_hostbound_auth"]
