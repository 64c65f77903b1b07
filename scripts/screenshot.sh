#!/usr/bin/env bash
# Refreshes docs/dashboard.png, the README's picture of the dashboard: runs the dashboard test
# (tests/tests/dashboard.rs: headless Chromium on service-cdm while orders flow) with
# VAULTLINE_UPDATE_SCREENSHOT=1 against the local stack (scripts/stack.sh up). An ordinary
# test run writes its screenshot under the target directory and leaves the work tree alone;
# this is the one command that changes the tracked file.
#
#   scripts/screenshot.sh
#
# Needs Chromium (Debian: chromium; CHROMIUM names another binary).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
cd "$REPO_ROOT"

stack_env=$(scripts/stack.sh up)
eval "$stack_env"
VAULTLINE_UPDATE_SCREENSHOT=1 cargo test -p vault-tests --test dashboard -- --nocapture
git diff --stat -- docs/dashboard.png
