"""Target image builds: offline debootstrap base, then the target's Dockerfile on top.

Owns deciding whether a build is needed (a label holds the hash of the build's inputs) and running
debootstrap, `docker import` and `docker build` through the docker CLI. This is a separate,
blocking command (`sandtrap image build`); the service's event loop never runs it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sandtrap.errors import ImageError

HASH_LABEL = "sandtrap.inputs-hash"
DEBIAN_BASE = "sandtrap/debian-base:12"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Packages debootstrap adds to the minimal base so the Dockerfile's apt steps can run.
_BASE_INCLUDE = "ca-certificates"

Reporter = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """One buildable target image."""

    name: str
    tag: str
    default_base: str

    def dockerfile(self, context: Path) -> Path:
        return context / self.name / "Dockerfile"


TARGETS = {
    "debian": Target("debian", "sandtrap/target-debian:12", DEBIAN_BASE),
    "ubuntu": Target("ubuntu", "sandtrap/target-ubuntu:22.04", "ubuntu:22.04"),
}


@dataclass(frozen=True)
class BuildResult:
    tag: str
    built: bool
    inputs_hash: str
    reason: str


def find_context() -> Path:
    """The `containers/targets` folder: next to the source tree, else in the working directory."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "containers" / "targets"
        if candidate.is_dir():
            return candidate
    candidate = Path.cwd() / "containers" / "targets"
    if candidate.is_dir():
        return candidate
    raise ImageError(
        "cannot find containers/targets (run from the SandTrap checkout or pass --context DIR)"
    )


def _context_files(context: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(context):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def inputs_hash(context: Path, target: Target, base_id: str) -> str:
    """Hash of everything a build depends on: context files, the target, the base image's id."""
    digest = hashlib.sha256()
    digest.update(f"target={target.name}\ntag={target.tag}\nbase={base_id}\n".encode())
    for path in _context_files(context):
        rel = path.relative_to(context).as_posix()
        digest.update(f"file={rel}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


class Docker:
    """The few docker CLI calls image builds need; errors become ImageError."""

    def __init__(self, binary: str = "docker") -> None:
        found = shutil.which(binary)
        if found is None:
            raise ImageError("the docker CLI is not installed (run scripts/ensure-docker)")
        self.binary = found

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - fixed docker CLI, arguments are ours
            [self.binary, *args], capture_output=True, text=True, check=False
        )

    def image_id(self, ref: str) -> str | None:
        proc = self._run("image", "inspect", "--format", "{{.Id}}", ref)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def image_label(self, ref: str, label: str) -> str | None:
        proc = self._run(
            "image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', ref
        )
        if proc.returncode != 0:
            return None
        value = proc.stdout.strip()
        return value if value and value != "<no value>" else None

    def pull(self, ref: str) -> bool:
        return self._run("pull", ref).returncode == 0

    def stream(self, args: list[str], report: Reporter, stdin: int | None = None) -> None:
        """Run a docker command, passing each output line to `report`; raise on failure."""
        _stream([self.binary, *args], report, stdin=stdin, what=f"docker {args[0]}")


def _stream(argv: list[str], report: Reporter, *, stdin: int | None = None, what: str) -> None:
    tail: list[str] = []
    with subprocess.Popen(  # noqa: S603 - argv built from fixed commands and our own values
        argv,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as proc:
        assert proc.stdout is not None  # noqa: S101 - guaranteed by stdout=PIPE
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail = [*tail[-19:], line]
                report(line)
        code = proc.wait()
    if code != 0:
        detail = "\n".join(tail[-8:])
        raise ImageError(f"{what} failed with exit code {code}:\n{detail}")


def build_debian_base(
    docker: Docker, report: Reporter, mirror: str = DEFAULT_MIRROR, tag: str = DEBIAN_BASE
) -> None:
    """debootstrap a Debian 12 rootfs and `docker import` it as `tag` (needs root)."""
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if debootstrap is None:
        raise ImageError(
            "debootstrap is not installed: apt-get install debootstrap "
            "(or pass --base IMAGE to build on a registry image such as debian:12)"
        )
    if os.geteuid() != 0:
        raise ImageError("building the Debian base with debootstrap needs root")
    workdir = Path(tempfile.mkdtemp(prefix="sandtrap-rootfs-", dir="/var/tmp"))
    rootfs = workdir / "rootfs"
    try:
        report(f"debootstrap: Debian 12 (bookworm) minbase from {mirror} (about a minute)")
        _stream(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={_BASE_INCLUDE}",
                "bookworm",
                str(rootfs),
                mirror,
            ],
            report,
            what="debootstrap",
        )
        # What an image should not carry: downloaded packages and package lists (about 80 MB that
        # no later layer can shrink).
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(rootfs / cache, ignore_errors=True)
            (rootfs / cache / "partial").mkdir(parents=True)
        for leftover in rootfs.glob("var/cache/apt/*.bin"):
            leftover.unlink()
        report(f"docker import: {tag}")
        tar = subprocess.Popen(  # noqa: S603 - fixed tar invocation on our own directory
            ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],  # noqa: S607
            stdout=subprocess.PIPE,
        )
        try:
            assert tar.stdout is not None  # noqa: S101 - guaranteed by stdout=PIPE
            docker.stream(
                ["import", "--change", 'CMD ["/bin/bash"]', "-", tag],
                report,
                stdin=tar.stdout.fileno(),
            )
        finally:
            if tar.stdout is not None:
                tar.stdout.close()
            if tar.wait() != 0:
                raise ImageError("tar of the debootstrap rootfs failed")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def build_target(
    target_name: str,
    *,
    base: str | None = None,
    force: bool = False,
    context: Path | None = None,
    mirror: str = DEFAULT_MIRROR,
    report: Reporter = lambda _line: None,
    docker: Docker | None = None,
    tag: str | None = None,
) -> BuildResult:
    """Build a target image unless an image with the same inputs hash already exists.

    Args:
        target_name: key of TARGETS ("debian", "ubuntu").
        base: base image; default is the target's own (debootstrapped for Debian when absent).
        force: rebuild even when the hash matches (the base is rebuilt too when it is ours).
        tag: the image's tag instead of the target's own (a trial build next to the real one).

    Raises:
        ImageError: unknown target, missing tools, or a failed step (with its last output lines).
    """
    try:
        target = TARGETS[target_name]
    except KeyError:
        raise ImageError(f"unknown target {target_name!r}; choose from {sorted(TARGETS)}") from None
    if tag:
        target = dataclasses.replace(target, tag=tag)
    docker = docker or Docker()
    context = context or find_context()
    if not target.dockerfile(context).is_file():
        raise ImageError(f"missing {target.dockerfile(context)}")
    base = base or target.default_base
    base_id = docker.image_id(base)
    if base == DEBIAN_BASE and (base_id is None or force):
        build_debian_base(docker, report, mirror=mirror, tag=base)
        base_id = docker.image_id(base)
    elif base_id is None:
        report(f"pulling base image {base}")
        if not docker.pull(base):
            raise ImageError(
                f"base image {base} is not present and cannot be pulled; "
                f"without a registry, omit --base to build the offline Debian base"
            )
        base_id = docker.image_id(base)
    if base_id is None:
        raise ImageError(f"base image {base} is still missing after building or pulling it")
    digest = inputs_hash(context, target, base_id)
    if not force and docker.image_label(target.tag, HASH_LABEL) == digest:
        return BuildResult(target.tag, built=False, inputs_hash=digest, reason="up to date")
    report(f"docker build: {target.tag} on {base}")
    docker.stream(
        [
            "build",
            "--file",
            str(target.dockerfile(context)),
            "--build-arg",
            f"BASE={base}",
            "--label",
            f"{HASH_LABEL}={digest}",
            "--tag",
            target.tag,
            str(context),
        ],
        report,
    )
    return BuildResult(target.tag, built=True, inputs_hash=digest, reason="built")
