#!/usr/bin/env bash
# Attack a real sandbox from inside and report what held (see SECURITY.md, "Active verification").
# Usage: scripts/verify_security.sh [--config FILE] [--runtime runc|runsc] [--strict] [--json]
# Exit status: 0 every check passed (warnings allowed), 1 a check failed or the verifier could not
# run, 2 usage or configuration error.
set -euo pipefail
cd "$(dirname "$0")/.."
sandtrap=.venv/bin/sandtrap
[ -x "$sandtrap" ] || sandtrap=sandtrap
exec "$sandtrap" verify-security "$@"
