"""The composition root: builds every part of the service from a Config and runs it.

Until the SSH front lands this checks what the service needs (engine, target image, data folder)
and reports; it never claims to serve SSH.
"""

from __future__ import annotations

import asyncio
import logging

import aiodocker

from sandtrap.config import Config
from sandtrap.errors import EngineUnavailable, ImageMissing

log = logging.getLogger(__name__)


async def _preflight(config: Config) -> None:
    config.storage.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        docker = aiodocker.Docker(url=config.sandbox.docker_url)
    except (OSError, ValueError) as exc:
        raise EngineUnavailable(f"cannot reach the Docker engine: {exc}") from None
    try:
        try:
            version = await docker.version()
        except (OSError, aiodocker.DockerError) as exc:
            raise EngineUnavailable(f"the Docker engine does not answer: {exc}") from None
        log.info("Docker engine %s (API %s)", version.get("Version"), version.get("ApiVersion"))
        for item in config.sandbox.weighted_images():
            try:
                await docker.images.inspect(item.image)
            except aiodocker.DockerError:
                raise ImageMissing(
                    f"target image {item.image} is missing: run `sandtrap image build`"
                ) from None
            log.info("target image %s present", item.image)
    finally:
        await docker.close()


def run_service(config: Config) -> int:
    """Run the service to completion; returns the process exit code."""
    asyncio.run(_preflight(config))
    log.warning("configuration, engine and images are ready; the SSH front is not built yet")
    return 0
