"""Key exchanges that asyncssh lacks or runs differently from sshd, registered with asyncssh.

Owns sntrup761x25519 (through the `pqcrypto` wheel instead of liboqs) and OpenSSH's Diffie-Hellman
group exchange (sizes and primes from /etc/ssh/moduli, sshd 9.2's `choose_dh`), each registered once
per process. Uses asyncssh private names (listed in ssh/compat.py). Persona offers: persona.py.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256, sha512
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

import asyncssh
from asyncssh import kex as asyncssh_kex
from asyncssh import kex_dh
from asyncssh.crypto import Curve25519DH
from asyncssh.packet import MPInt, SSHPacket

log = logging.getLogger(__name__)

SNTRUP761_NAMES = (b"sntrup761x25519-sha512", b"sntrup761x25519-sha512@openssh.com")
GEX_SHA256 = b"diffie-hellman-group-exchange-sha256"
DEFAULT_MODULI_PATH = Path("/etc/ssh/moduli")

# dh.h: DH_GRP_MIN / DH_GRP_MAX in OpenSSH 9.2.
GEX_MIN_BITS = 2048
GEX_MAX_BITS = 8192
# moduli(5): type 2 is a safe prime; test bit 0x01 marks a composite.
_MODULI_TYPE_SAFE = 2
_MODULI_TESTS_COMPOSITE = 0x01
# Private exponent size. sshd uses twice the negotiated cipher's key bits (dh_gen_key); 512 covers
# every cipher the persona offers at the 256-bit level and keeps pow() on 8192-bit groups ~65 ms.
_EXPONENT_BITS = 512


# --- sntrup761x25519 -----------------------------------------------------------------------------


def enable_sntrup761() -> bool:
    """Register both sntrup761x25519 kex names with asyncssh, backed by `pqcrypto`'s PQClean code.

    asyncssh offers sntrup761 only when it finds liboqs through ctypes, which neither Debian 12 nor
    PyPI ships. Idempotent. Returns whether the names are available; call before building options.
    """
    if SNTRUP761_NAMES[1] in asyncssh_kex.get_kex_algs():
        return True
    try:
        # pqcrypto ships no type information.
        from pqcrypto.kem import sntrup_761 as kem  # type: ignore[import-untyped]
    except ImportError:
        return False

    class _SNTRUP761:
        """asyncssh's `crypto.pq.PQKey` interface over pqcrypto (which returns ciphertext first)."""

        pubkey_bytes = kem.PUBLIC_KEY_SIZE
        privkey_bytes = kem.SECRET_KEY_SIZE
        ciphertext_bytes = kem.CIPHERTEXT_SIZE
        secret_bytes = kem.SHARED_SECRET_SIZE

        def __init__(self, alg_name: bytes) -> None:
            # The key pair is made when first needed: only a client uses it (get_public,
            # decaps); a server only encapsulates to the client's key, and sntrup761's key
            # generation costs tens of milliseconds of CPU, on the event loop, per handshake.
            self._keys: tuple[bytes, bytes] | None = None

        def _pair(self) -> tuple[bytes, bytes]:
            if self._keys is None:
                public, private = kem.keygen()
                self._keys = bytes(public), bytes(private)
            return self._keys

        def get_public(self) -> bytes:
            return self._pair()[0]

        def encaps(self, peer_public: bytes) -> tuple[bytes, bytes]:
            if len(peer_public) != self.pubkey_bytes:
                raise ValueError("Invalid public key")
            ciphertext, secret = kem.encaps(peer_public)
            return bytes(secret), bytes(ciphertext)

        def decaps(self, ciphertext: bytes) -> bytes:
            if len(ciphertext) != self.ciphertext_bytes:
                raise ValueError("Invalid ciphertext")
            return bytes(kem.decaps(self._pair()[1], ciphertext))

    args = (_SNTRUP761, b"sntrup761", Curve25519DH)
    for name in SNTRUP761_NAMES:
        asyncssh_kex.register_kex_alg(name, kex_dh._KexHybridECDH, sha512, args, True)
    return True


# --- diffie-hellman-group-exchange-sha256 ---------------------------------------------------------


@dataclass(frozen=True)
class Modulus:
    """One usable line of an OpenSSH moduli file."""

    bits: int
    generator: int
    prime: int


def parse_moduli(text: str) -> tuple[Modulus, ...]:
    """The safe primes of a moduli(5) file, as sshd's `parse_prime` accepts them (dh.c).

    The size column is one less than the prime's bit length; lines that do not parse, composites,
    untested and non-safe primes are skipped, as sshd skips them.
    """
    out = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#") or len(fields) != 7:
            continue
        try:
            kind, tests, size = int(fields[1]), int(fields[2]), int(fields[4])
            generator, prime = int(fields[5], 16), int(fields[6], 16)
        except ValueError:
            continue
        if kind != _MODULI_TYPE_SAFE or tests & _MODULI_TESTS_COMPOSITE or not tests:
            continue
        if generator < 2 or prime.bit_length() != size + 1:
            continue
        out.append(Modulus(size + 1, generator, prime))
    return tuple(out)


def load_moduli(path: Path = DEFAULT_MODULI_PATH) -> tuple[Modulus, ...]:
    """Read and parse a moduli file; empty when it is missing or unreadable (sshd then uses its
    fixed fallback groups, and so do we). Blocking: call through `asyncio.to_thread`."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        log.warning("could not open %s (%s), using fixed modulus", path, exc.strerror)
        return ()
    moduli = parse_moduli(text)
    if not moduli:
        log.warning("no suitable primes in %s, using fixed modulus", path)
    return moduli


def _fallback_group(max_bits: int) -> tuple[int, int]:
    # dh.c dh_new_group_fallback(): RFC 3526 group 14, 16 or 18.
    if max_bits < 3072:
        return kex_dh._group14_g, kex_dh._group14_p
    if max_bits < 6144:
        return kex_dh._group16_g, kex_dh._group16_p
    return kex_dh._group18_g, kex_dh._group18_p


def gex_bounds(min_bits: int, wanted_bits: int, max_bits: int) -> tuple[int, int, int] | None:
    """The (min, wanted, max) sshd works with for a GEX request, or None when sshd refuses it
    (kexgexs.c: SSH_ERR_DH_GEX_OUT_OF_RANGE, which closes the connection without a message)."""
    if max_bits < min_bits or wanted_bits < min_bits or max_bits < wanted_bits:
        return None
    if max_bits < GEX_MIN_BITS:
        return None
    low = max(GEX_MIN_BITS, min_bits)
    high = min(GEX_MAX_BITS, max_bits)
    wanted = max(GEX_MIN_BITS, min(GEX_MAX_BITS, wanted_bits))
    return low, wanted, high


def choose_group(
    moduli: Sequence[Modulus], min_bits: int, wanted_bits: int, max_bits: int
) -> tuple[int, int]:
    """(generator, prime) as sshd's `choose_dh` picks it: the size nearest above `wanted_bits`
    within [min, max] (else the largest below), a random prime of that size, else the fallback."""
    best = 0
    for modulus in moduli:
        if modulus.bits > max_bits or modulus.bits < min_bits:
            continue
        if (wanted_bits < modulus.bits < best) or (modulus.bits > best and best < wanted_bits):
            best = modulus.bits
    candidates = [modulus for modulus in moduli if modulus.bits == best]
    if not candidates:
        return _fallback_group(max_bits)
    chosen = candidates[secrets.randbelow(len(candidates))]
    return chosen.generator, chosen.prime


def is_valid_dh_public(value: int, prime: int) -> bool:
    """dh.c dh_pub_is_valid(): 1 < value < p - 1, with more than one bit set."""
    return 1 < value < prime - 1 and value.bit_count() > 1


class _OpenSSHGex(kex_dh._KexDHGex):
    """asyncssh's GEX with sshd 9.2's server side; `groups` are set by `enable_openssh_gex`."""

    groups: ClassVar[tuple[Modulus, ...]] = ()

    def _process_request(self, pkttype: int, pktid: int, packet: SSHPacket) -> None:
        if self._conn.is_client():
            super()._process_request(pkttype, pktid, packet)
            return
        if self._p:
            raise asyncssh.ProtocolError("Kex DH group already requested")
        self._gex_data = packet.get_remaining_payload()
        requested = packet.get_uint32(), packet.get_uint32(), packet.get_uint32()
        packet.check_end()
        bounds = gex_bounds(*requested)
        if bounds is None:
            # Code 3 is never sent by the persona's connection: the close is silent as in sshd.
            raise asyncssh.KeyExchangeFailed("DH GEX group out of range")
        g, p = choose_group(self.groups, *bounds)
        self._init_group(g, p)
        self._gex_data += MPInt(p) + MPInt(g)
        self.send_packet(self._group_type, MPInt(p), MPInt(g))

    def _compute_server_shared(self) -> bytes:
        if not is_valid_dh_public(self._e, self._p):
            raise asyncssh.KeyExchangeFailed("invalid public DH value")
        bits = min(_EXPONENT_BITS, self._p.bit_length() - 1)
        exponent = secrets.randbits(bits) | (1 << (bits - 1))
        self._f = pow(self._g, exponent, self._p)
        return MPInt(pow(self._e, exponent, self._p))

    # No MSG_KEX_DH_GEX_REQUEST_OLD: sshd 9.2 has no handler for it either.
    _packet_handlers = MappingProxyType(
        {
            kex_dh.MSG_KEX_DH_GEX_REQUEST: _process_request,
            kex_dh.MSG_KEX_DH_GEX_GROUP: kex_dh._KexDHGex._process_group,
            kex_dh.MSG_KEX_DH_GEX_INIT: kex_dh._KexDHBase._process_init,
            kex_dh.MSG_KEX_DH_GEX_REPLY: kex_dh._KexDHBase._process_reply,
        }
    )


_OPENSSH_GEX_HANDLER = (_OpenSSHGex, sha256, ())


def enable_openssh_gex(moduli: Sequence[Modulus]) -> None:
    """Make asyncssh's server side of diffie-hellman-group-exchange-sha256 behave as sshd 9.2.

    Requests are clamped to [2048, 8192] bits and refused (silent close) below that; the group comes
    from `moduli` as `choose_group` picks it. DH is computed with `pow()`: pyca/OpenSSL re-validates
    a non-RFC prime on every use, which blocks the event loop for 1.5 s (3072 bits) to 29 s (8192).
    GEX_REQUEST_OLD is not handled, as in sshd: UNIMPLEMENTED, or a disconnect under strict kex.
    The client side is asyncssh's own. asyncssh's registry is written on the first call only; each
    call replaces the groups (the last moduli win, for connections that start after it).
    """
    _OpenSSHGex.groups = tuple(moduli)
    if asyncssh_kex._kex_handlers.get(GEX_SHA256) is not _OPENSSH_GEX_HANDLER:
        asyncssh_kex._kex_handlers[GEX_SHA256] = _OPENSSH_GEX_HANDLER


__all__ = [
    "DEFAULT_MODULI_PATH",
    "Modulus",
    "choose_group",
    "enable_openssh_gex",
    "enable_sntrup761",
    "gex_bounds",
    "is_valid_dh_public",
    "load_moduli",
    "parse_moduli",
]
