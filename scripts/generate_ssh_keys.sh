#!/usr/bin/env bash
# Generate SandTrap's SSH host keys (RSA 3072, ECDSA P-256, Ed25519: Debian sshd's set) into
# DIR/keys, keeping any that exist. SandTrap creates missing keys itself on first start; use this
# to make them ahead of time (e.g. to record their fingerprints) or to seed a compose volume.
#
#   scripts/generate_ssh_keys.sh [DIR]          DIR defaults to ./var (storage.data_dir)
#   scripts/generate_ssh_keys.sh --volume NAME  into a Docker volume (e.g. sandtrap_data), owned
#                                               by the image's user 10001
set -euo pipefail
if [ "${1:-}" = "--volume" ]; then
  volume=${2:?usage: generate_ssh_keys.sh --volume NAME}
  image=${SANDTRAP_IMAGE:-sandtrap/sandtrap:latest}
  # SandTrap's own key generation, run as the image's user inside the volume.
  docker run --rm --network none -v "$volume:/var/lib/sandtrap" --entrypoint python3 "$image" -c \
    'from pathlib import Path; from sandtrap.ssh.hostkeys import load_or_create_host_keys as f
keys = f(Path("/var/lib/sandtrap/keys"))
print("\n".join(k.get_fingerprint() + " " + k.get_algorithm() for k in keys))'
  exit 0
fi
dir=${1:-./var}/keys
mkdir -p "$dir"
chmod 700 "$dir"
command -v ssh-keygen >/dev/null || { echo "generate_ssh_keys.sh: ssh-keygen is missing (apt-get install openssh-client)" >&2; exit 1; }
for spec in "rsa -b 3072" "ecdsa -b 256" "ed25519"; do
  type=${spec%% *}
  key="$dir/ssh_host_${type}_key"
  if [ -f "$key" ]; then
    echo "keeping $key"
    continue
  fi
  # shellcheck disable=SC2086 # spec holds the type and its size as separate words
  ssh-keygen -q -t $spec -N "" -C "" -f "$key"
  chmod 600 "$key"
  chmod 644 "$key.pub"
  echo "generated $key"
done
for pub in "$dir"/ssh_host_*_key.pub; do ssh-keygen -l -f "$pub"; done
