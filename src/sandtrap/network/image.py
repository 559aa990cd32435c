"""The sinkhole's image: Debian's python3, nftables and iproute2 on the offline Debian base, and
the sinkhole's standard-library modules of this package copied in as `stsink`.

Built with the docker CLI like the target images (`sandbox/images.py`), skipped when its inputs
hash matches; run by `sandtrap image build --sinkhole` and the tests. No registry is needed.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from sandtrap.errors import ImageError
from sandtrap.sandbox.images import (
    DEBIAN_BASE,
    HASH_LABEL,
    BuildResult,
    Docker,
    Reporter,
    build_debian_base,
)

# The modules that run inside the sinkhole: standard library and each other only.
SERVICE_MODULES = ("budget.py", "dns.py", "sniff.py", "service.py")

DOCKERFILE = """\
# SandTrap's network sinkhole (built by `sandtrap image build --sinkhole`).
ARG BASE=sandtrap/debian-base:12
FROM ${BASE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
    python3 nftables iproute2 \\
 && rm -rf /var/lib/apt/lists/*
COPY stsink/ /opt/sandtrap-sinkhole/stsink/
WORKDIR /opt/sandtrap-sinkhole
LABEL org.opencontainers.image.title="sandtrap-sinkhole"
STOPSIGNAL SIGTERM
ENTRYPOINT ["python3", "-m", "stsink.service"]
"""


def _context(workdir: Path) -> str:
    """Write the build context; return its inputs hash (files and Dockerfile)."""
    package = workdir / "stsink"
    package.mkdir()
    (package / "__init__.py").write_text('"""SandTrap sinkhole."""\n', encoding="utf-8")
    (workdir / "Dockerfile").write_text(DOCKERFILE, encoding="utf-8")
    digest = hashlib.sha256(DOCKERFILE.encode())
    here = Path(__file__).parent
    for name in SERVICE_MODULES:
        data = (here / name).read_bytes()
        (package / name).write_bytes(data)
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def build_sinkhole(
    tag: str,
    *,
    base: str = DEBIAN_BASE,
    force: bool = False,
    report: Reporter = lambda _line: None,
    docker: Docker | None = None,
) -> BuildResult:
    """Build the sinkhole image `tag` unless it is up to date.

    Raises:
        ImageError: missing tools or base, or a failed build (with its last output lines).
    """
    docker = docker or Docker()
    base_id = docker.image_id(base)
    if base == DEBIAN_BASE and base_id is None:
        build_debian_base(docker, report, tag=base)
        base_id = docker.image_id(base)
    if base_id is None:
        raise ImageError(f"base image {base} is missing (build the target image first)")
    workdir = Path(tempfile.mkdtemp(prefix="sandtrap-sinkhole-"))
    try:
        digest = hashlib.sha256(f"{_context(workdir)}\n{base_id}".encode()).hexdigest()
        if not force and docker.image_label(tag, HASH_LABEL) == digest:
            return BuildResult(tag, built=False, inputs_hash=digest, reason="up to date")
        report(f"docker build: {tag} on {base}")
        docker.stream(
            ["build", "--build-arg", f"BASE={base}", "--label", f"{HASH_LABEL}={digest}",
             "--tag", tag, str(workdir)],
            report,
        )  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return BuildResult(tag, built=True, inputs_hash=digest, reason="built")
