#!/usr/bin/env bash
# Build the images a SandTrap deployment needs: the target image(s) the sandboxes run, the network
# sinkhole's, and the image of SandTrap itself (SSH front and Engine API gate). Each build is
# skipped or cached when its inputs are unchanged.
#
#   scripts/build_images.sh [--app-only|--targets-only] [--tag TAG] [--base IMAGE]
#
# --base  base of the SandTrap image: python:3.11-slim with a registry (the default when it can be
#         pulled), else the offline Debian base sandtrap/debian-base:12 that `sandtrap image build`
#         makes with debootstrap.
# Env: SANDTRAP (the sandtrap command, default .venv/bin/sandtrap), SANDTRAP_BUILD_CA (a CA bundle
# for pip behind a TLS-intercepting proxy; default: $PIP_CERT or $SSL_CERT_FILE when set).
set -euo pipefail
cd "$(dirname "$0")/.."
app=1 targets=1 tag=sandtrap/sandtrap:latest base=""
while [ $# -gt 0 ]; do
  case "$1" in
    --app-only) targets=0 ;;
    --targets-only) app=0 ;;
    --tag) tag="$2"; shift ;;
    --base) base="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build_images.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
SANDTRAP=${SANDTRAP:-.venv/bin/sandtrap}

if [ "$targets" = 1 ]; then
  "$SANDTRAP" image build
  # The network sinkhole (sandbox.network: sinkhole, the default) on the same Debian base.
  "$SANDTRAP" image build --sinkhole sandtrap/sinkhole:12
fi

if [ "$app" = 1 ]; then
  if [ -z "$base" ]; then
    if docker image inspect python:3.11-slim >/dev/null 2>&1; then
      base=python:3.11-slim
    else
      base=sandtrap/debian-base:12
    fi
  fi
  if ! docker image inspect "$base" >/dev/null 2>&1 && [ "$base" = sandtrap/debian-base:12 ]; then
    # The offline base comes with the target image build.
    "$SANDTRAP" image build >/dev/null
  fi
  ca=${SANDTRAP_BUILD_CA:-${PIP_CERT:-${SSL_CERT_FILE:-}}}
  mkdir -p build
  if [ -n "$ca" ] && [ -f "$ca" ]; then
    cmp -s "$ca" build/ca-bundle.pem || cp "$ca" build/ca-bundle.pem
  else
    rm -f build/ca-bundle.pem
  fi
  echo "build_images.sh: building $tag on $base" >&2
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  if ! docker build --build-arg BASE="$base" -t "$tag" . >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "build_images.sh: docker build of $tag failed" >&2
    exit 1
  fi
  echo "$tag: built on $base"
fi
