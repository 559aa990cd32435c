#!/usr/bin/env bash
# Remove SandTrap's containers from the engine. By default only idle pool members
# (sandtrap-pool-*), which SandTrap recreates anyway; kept session sandboxes are evidence and go
# only with --kept. Stop SandTrap first: a running service would refill its pool.
#
#   scripts/cleanup.sh [--sensor NAME] [--kept] [--dry-run]
#
# --sensor  only this sensor's sandboxes (label sandtrap.sensor); default: every sensor's
# --kept    also remove stopped session sandboxes (sandtrap-s-*); export what you need first
#           (sandtrap export SESSION -o bundle.tar.gz)
set -euo pipefail
sensor="" kept=0 dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --sensor) sensor="$2"; shift ;;
    --kept) kept=1 ;;
    --dry-run) dry=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "cleanup.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
filters=(--filter "label=sandtrap.role=sandbox")
[ -n "$sensor" ] && filters+=(--filter "label=sandtrap.sensor=$sensor")
mapfile -t rows < <(docker ps -a "${filters[@]}" --format '{{.ID}} {{.Names}}')
remove=()
for row in "${rows[@]}"; do
  id=${row%% *} name=${row#* }
  case "$name" in
    sandtrap-pool-*) remove+=("$id"); echo "pool member  $name" ;;
    sandtrap-s-*) if [ "$kept" = 1 ]; then remove+=("$id"); echo "kept sandbox $name"; fi ;;
  esac
done
if [ ${#remove[@]} -eq 0 ]; then
  echo "cleanup.sh: nothing to remove"
  exit 0
fi
if [ "$dry" = 1 ]; then
  echo "cleanup.sh: would remove ${#remove[@]} container(s)"
  exit 0
fi
docker rm -f -v "${remove[@]}" >/dev/null
echo "cleanup.sh: removed ${#remove[@]} container(s)"
