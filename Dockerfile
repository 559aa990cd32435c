# SandTrap itself (the SSH front and the Engine API gate share this image).
#
#   docker build -t sandtrap/sandtrap .                                  # python:3.11-slim
#   docker build --build-arg BASE=sandtrap/debian-base:12 -t sandtrap/sandtrap .   # offline
#
# BASE is any Debian 12 based image: an official Python image already has python3 and venv; on a
# plain Debian base (our debootstrap image) Debian's python3 and python3-venv are installed. The
# running image holds the virtual environment and nothing to build with; it runs as `sandtrap`.
ARG BASE=python:3.11-slim

FROM ${BASE} AS python
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN set -eu; \
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
      export DEBIAN_FRONTEND=noninteractive; \
      apt-get update -qq; \
      apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates; \
      rm -rf /var/lib/apt/lists/* /var/cache/apt/*; \
    fi; \
    python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version'

FROM python AS build
WORKDIR /src
# sshd's DH group-exchange moduli, so the SSH persona offers the same groups as Debian's sshd
# (without the whole openssh-server package in the running image).
RUN set -eu; cd /tmp; export DEBIAN_FRONTEND=noninteractive; \
    apt-get update -qq; apt-get download openssh-server >/dev/null; \
    dpkg-deb --fsys-tarfile openssh-server_*.deb | tar -x ./etc/ssh/moduli; \
    install -D -m 0644 /tmp/etc/ssh/moduli /out/etc/ssh/moduli; \
    rm -rf /tmp/* /var/lib/apt/lists/*
# Dependencies first, from pyproject.toml alone, so a source change reuses this layer.
# build/ca-bundle.pem is optional (the glob may match nothing): the CA bundle of a TLS-intercepting
# proxy, which scripts/build_images.sh copies from the host's PIP_CERT or SSL_CERT_FILE.
COPY pyproject.toml README.md build/ca-bundl[e].pem ./
RUN if [ -f ca-bundle.pem ]; then export PIP_CERT=/src/ca-bundle.pem; fi \
 && python3 -m venv /opt/sandtrap \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && /opt/sandtrap/bin/pip install -q --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt
COPY src ./src
RUN if [ -f ca-bundle.pem ]; then export PIP_CERT=/src/ca-bundle.pem; fi \
 && /opt/sandtrap/bin/pip install -q --no-cache-dir --disable-pip-version-check --no-deps . \
 && /opt/sandtrap/bin/python -m compileall -q /opt/sandtrap >/dev/null \
 && /opt/sandtrap/bin/sandtrap --version

FROM python
LABEL org.opencontainers.image.title="SandTrap" \
      org.opencontainers.image.description="High-interaction SSH honeypot (SSH front and Engine API gate)"
RUN groupadd --system --gid 10001 sandtrap \
 && useradd --system --uid 10001 --gid sandtrap --home-dir /var/lib/sandtrap --shell /usr/sbin/nologin sandtrap \
 && mkdir -p /var/lib/sandtrap /run/sandtrap /etc/sandtrap \
 && chown sandtrap:sandtrap /var/lib/sandtrap /run/sandtrap
COPY --from=build /out/etc/ssh/moduli /etc/ssh/moduli
COPY --from=build /opt/sandtrap /opt/sandtrap
ENV PATH=/opt/sandtrap/bin:$PATH SANDTRAP_CONFIG=/etc/sandtrap/config.yaml
WORKDIR /var/lib/sandtrap
USER sandtrap
EXPOSE 2222
VOLUME ["/var/lib/sandtrap"]
ENTRYPOINT ["sandtrap"]
CMD ["run"]
