"""Canary: every asyncssh internal SandTrap relies on (sandtrap.ssh.compat) exists in the installed
asyncssh, so an upgrade that drops one fails here, by name, instead of at an attacker's login."""

from __future__ import annotations

import importlib
import inspect
import re
import tomllib
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from sandtrap.ssh.compat import INTERNALS, SIGNATURES, TESTED_ASYNCSSH, Internal, Signature

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _where(module: str, owner: str, name: str) -> str:
    return ".".join(part for part in (module, owner, name) if part)


def _missing(what: str, user: str) -> str:
    return (
        f"asyncssh {asyncssh.__version__} has no {what}, which {user} relies on; SandTrap was "
        f"tested with asyncssh {TESTED_ASYNCSSH}. Adapt {user} and sandtrap/ssh/compat.py."
    )


def _assigned_on_instances(cls: type, name: str) -> bool:
    """Whether some class in `cls`'s MRO assigns `self.<name>` (an instance attribute)."""
    assignment = re.compile(rf"\bself\.{re.escape(name)}\s*(?::[^=\n]*)?=(?!=)")
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] != "asyncssh":
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if assignment.search(source):
            return True
    return False


def _resolve(module: str, qualname: str) -> Any:
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


@pytest.mark.parametrize(
    "internal", INTERNALS, ids=lambda i: _where(i.module, i.owner, i.name) + f" ({i.user})"
)
def test_asyncssh_internal_exists(internal: Internal) -> None:
    what = _where(internal.module, internal.owner, internal.name)
    try:
        target = _resolve(internal.module, internal.owner) if internal.owner else None
        if target is None:
            target = importlib.import_module(internal.module)
    except (ImportError, AttributeError):
        pytest.fail(_missing(_where(internal.module, internal.owner, ""), internal.user))
    if hasattr(target, internal.name):
        return
    if inspect.isclass(target) and _assigned_on_instances(target, internal.name):
        return
    # Protocol classes declare attributes by annotation only.
    if inspect.isclass(target) and internal.name in getattr(target, "__annotations__", {}):
        return
    pytest.fail(_missing(f"{what} ({internal.why})", internal.user))


@pytest.mark.parametrize("signature", SIGNATURES, ids=lambda s: f"{s.module}.{s.qualname}")
def test_asyncssh_signature_unchanged(signature: Signature) -> None:
    what = f"{signature.module}.{signature.qualname}"
    try:
        function = _resolve(signature.module, signature.qualname)
    except (ImportError, AttributeError):
        pytest.fail(_missing(what, signature.user))
    names = [name for name in inspect.signature(function).parameters if name != "self"]
    leading = tuple(names[: len(signature.parameters)])
    assert leading == signature.parameters, _missing(
        f"{what}{signature.parameters} (it now takes {tuple(names)})", signature.user
    )


def test_pin_matches_the_tested_release() -> None:
    """pyproject.toml allows only the asyncssh series the internals were read from."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    pins = [dep for dep in project["dependencies"] if re.match(r"asyncssh\b", dep)]
    major, minor, _ = TESTED_ASYNCSSH.split(".")
    assert pins == [f"asyncssh>={TESTED_ASYNCSSH},<{major}.{int(minor) + 1}"]


def test_every_user_of_asyncssh_internals_is_listed() -> None:
    """Our modules that subclass or reach into asyncssh internals appear in the list."""
    users = {internal.user for internal in INTERNALS}
    assert users == {
        "sandtrap.ssh.connection",
        "sandtrap.ssh.channel",
        "sandtrap.ssh.kexalgs",
        "sandtrap.ssh.hostbound",
    }
    ssh = Path(__file__).resolve().parents[2] / "src" / "sandtrap" / "ssh"
    private = re.compile(r"\b(?:conn|kex_dh|asyncssh_kex|_auth)\._[A-Za-z]\w*")
    for path in sorted(ssh.glob("*.py")):
        module = f"sandtrap.ssh.{path.stem}"
        text = path.read_text(encoding="utf-8")
        for use in sorted(set(private.findall(text))):
            name = use.split(".", 1)[1].split(".")[0]
            listed = {(i.user, i.name) for i in INTERNALS}
            assert (module, name) in listed, f"{module} uses {use}: add it to sandtrap.ssh.compat"


def test_a_missing_name_fails_with_its_user_and_the_tested_version() -> None:
    gone = Internal("asyncssh.kex_dh", "_KexDHGex", "_no_such_name", "sandtrap.ssh.kexalgs", "why")
    with pytest.raises(pytest.fail.Exception) as failure:
        test_asyncssh_internal_exists(gone)
    message = str(failure.value)
    assert "asyncssh.kex_dh._KexDHGex._no_such_name" in message
    assert "sandtrap.ssh.kexalgs" in message
    assert TESTED_ASYNCSSH in message
