"""Honeytokens: unique decoy credentials planted in each sandbox as the pool warms it (issue 19).

Owns making one sandbox's tokens (an AWS key pair, a `.env` database password, an SSH key pair
whose public half this sensor accepts, a `.git-credentials` URL, a password in bash history) and
writing them into the sandbox in one exec. Registering them and noticing their later use is
analysis/honeytokens.py's; the pool calls `plant` right after `prepare` (sandbox/pool.py).
"""

from __future__ import annotations

import base64
import dataclasses
import random
import secrets
import string
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandtrap.events import EventSink, HoneytokensPlanted
from sandtrap.pubkeys import parse_key_line
from sandtrap.sandbox.container import ContainerSandbox
from sandtrap.sandbox.engine import ContainerEngine
from sandtrap.sandbox.forensics import stat_key

HOME = "/root"
_WORDS = ("atlas", "harbor", "nimbus", "quartz", "vector", "zephyr", "orchid", "falcon", "cobalt")


@dataclass(frozen=True)
class Token:
    """One planted value: `kind`, the file it is in, the value, and for keys the fingerprint."""

    kind: str
    path: str
    value: str
    fingerprint: str | None = None


@dataclass(frozen=True)
class Planted:
    tokens: list[Token]
    files: dict[str, tuple[bytes, int, bool]]  # path -> (content, mode, append)


def _password(rng: random.Random) -> str:
    return f"{rng.choice(_WORDS).capitalize()}{rng.choice(_WORDS)}{rng.randrange(10, 99)}!"


def make_tokens(hostname: str, rng: random.Random | None = None) -> Planted:
    """A fresh set of tokens and the files that carry them (pure apart from `rng` and the key)."""
    rng = rng or secrets.SystemRandom()
    upper = string.ascii_uppercase + "234567"
    key_id = "AKIA" + "".join(rng.choice(upper) for _ in range(16))
    secret = "".join(rng.choice(string.ascii_letters + string.digits + "+/") for _ in range(40))
    db_password = _password(rng)
    git_token = "ghp_" + "".join(
        rng.choice(string.ascii_letters + string.digits) for _ in range(36)
    )
    history_password = _password(rng)
    private = Ed25519PrivateKey.generate()
    public_line = (
        private.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )
    parsed = parse_key_line(public_line)
    fingerprint = parsed.fingerprint if parsed else None
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    user = rng.choice(("deploy", "backup", "ci"))
    tokens = [
        Token("aws_access_key_id", f"{HOME}/.aws/credentials", key_id),
        Token("aws_secret_access_key", f"{HOME}/.aws/credentials", secret),
        Token("env_password", "/srv/www/.env", db_password),
        Token("git_credentials", f"{HOME}/.git-credentials", git_token),
        Token("ssh_key", f"{HOME}/.ssh/id_ed25519", public_line, fingerprint),
        Token("history_password", f"{HOME}/.bash_history", history_password),
    ]
    files = {
        f"{HOME}/.aws/credentials": (
            f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"
            "region = eu-central-1\n".encode(),
            0o600,
            False,
        ),
        "/srv/www/.env": (
            f"APP_ENV=production\nDB_HOST=127.0.0.1\nDB_DATABASE=app\nDB_USERNAME=app\n"
            f"DB_PASSWORD={db_password}\n".encode(),
            0o640,
            False,
        ),
        f"{HOME}/.git-credentials": (
            f"https://{user}:{git_token}@git.{hostname.split('-')[0]}.internal\n".encode(),
            0o600,
            False,
        ),
        f"{HOME}/.ssh/id_ed25519": (private_pem, 0o600, False),
        f"{HOME}/.ssh/id_ed25519.pub": (
            f"{public_line} {user}@{hostname}\n".encode(),
            0o644,
            False,
        ),
        f"{HOME}/.bash_history": (
            f"sshpass -p '{history_password}' ssh {user}@10.0.3.12\n".encode(),
            0o600,
            True,
        ),
    }
    return Planted(tokens, files)


# Writes each file from base64 arguments, parents created, dated like the rest of the home.
_PLANT_SCRIPT = r"""
set -e
while [ $# -ge 4 ]; do
  path=$1; mode=$2; append=$3; data=$4; shift 4
  mkdir -p "$(dirname "$path")"
  if [ "$append" = 1 ]; then printf %s "$data" | base64 -d >> "$path"
  else printf %s "$data" | base64 -d > "$path"; fi
  chmod "$mode" "$path"
  touch -r /etc/hostname "$path" 2>/dev/null || true
done
"""


async def plant(
    engine: ContainerEngine, container_id: str, planted: Planted
) -> dict[str, tuple[int, int] | None]:
    """Write the tokens' files; returns their (size, mtime) for the sandbox's diff baseline.

    Raises:
        SandboxError: the engine failed.
        RuntimeError: the script failed in the sandbox.
    """
    argv = ["/bin/sh", "-c", _PLANT_SCRIPT, "sh"]
    for path, (content, mode, append) in planted.files.items():
        argv += [path, f"{mode:o}", "1" if append else "0", base64.b64encode(content).decode()]
    code, _, err = await engine.run(container_id, argv)
    if code != 0:
        raise RuntimeError(f"planting honeytokens failed: {err[:200]!r}")
    baseline: dict[str, tuple[int, int] | None] = {}
    paths = set(planted.files) | {path.rsplit("/", 1)[0] for path in planted.files}
    for path in sorted(paths):
        baseline[path] = stat_key(await engine.archive_stat(container_id, path))
    return baseline


async def plant_honeytokens(
    engine: ContainerEngine, events: EventSink, sandbox: ContainerSandbox
) -> None:
    """The pool's prepare step: plant, extend the diff baseline, register (an event).

    Raises:
        SandboxError, RuntimeError: as `plant` (the pool drops the sandbox).
    """
    planted = make_tokens(sandbox.hostname)
    sandbox.baseline.update(await plant(engine, sandbox.id, planted))
    events.emit(
        HoneytokensPlanted(
            container_id=sandbox.id,
            hostname=sandbox.hostname,
            tokens=[dataclasses.asdict(token) for token in planted.tokens],
        )
    )


__all__ = ["Planted", "Token", "make_tokens", "plant", "plant_honeytokens"]
