#!/usr/bin/env bash
# Builds the Vaultline image (docker/Dockerfile: every binary), tags it from git and, unless
# told not to, pushes it to the registry named by VAULTLINE_REGISTRY.
#
#   VAULTLINE_REGISTRY=registry.example.com/team scripts/image.sh          build, tag, push
#   scripts/image.sh --no-push                                              build and tag only
#
# Tags: `git describe --tags --always --dirty` (e.g. v0.3.0-4-g1a2b3c4, or 1a2b3c4-dirty), and
# the short commit hash (e.g. 1a2b3c4); a clean checkout also gets `latest`. A dirty tree is
# never pushed: an image must name the exact source it was built from.
#
#   VAULTLINE_REGISTRY   registry and path to push to (required unless --no-push)
#   VAULTLINE_IMAGE      the image's name (default: vaultline)
#   DOCKER               the client (default: docker; podman works too)
#   DOCKER_BUILD_ARGS    extra arguments for `build`, e.g. "--platform linux/amd64"
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
cd "$REPO_ROOT"

readonly DOCKER=${DOCKER:-docker}
readonly IMAGE=${VAULTLINE_IMAGE:-vaultline}

say() { printf '[image] %s\n' "$*" >&2; }
die() {
  printf '[image] error: %s\n' "$*" >&2
  exit 1
}

push=1
case "${1:-}" in
  "") ;;
  --no-push) push=0 ;;
  *)
    printf 'usage: %s [--no-push]\n' "$0" >&2
    exit 2
    ;;
esac

command -v "$DOCKER" >/dev/null || die "$DOCKER not found (set DOCKER to another client)"
git rev-parse --git-dir >/dev/null 2>&1 || die "not a git checkout: the tags come from git"

version=$(git describe --tags --always --dirty)
commit=$(git rev-parse --short HEAD)
dirty=0
[[ $version == *-dirty ]] && dirty=1

registry=${VAULTLINE_REGISTRY:-}
registry=${registry%/}
if ((push)); then
  [[ -n $registry ]] || die "VAULTLINE_REGISTRY is not set (e.g. registry.example.com/team), or use --no-push"
  ((dirty == 0)) || die "the working tree has uncommitted changes ($version): commit them, or use --no-push"
fi
repository=${registry:+$registry/}$IMAGE

tags=("$repository:$version")
[[ $commit != "$version" ]] && tags+=("$repository:$commit")
((dirty)) || tags+=("$repository:latest")

tag_args=()
for tag in "${tags[@]}"; do
  tag_args+=(--tag "$tag")
done
# Word splitting is wanted: DOCKER_BUILD_ARGS holds several arguments.
# shellcheck disable=SC2206
extra=(${DOCKER_BUILD_ARGS:-})

say "building ${tags[*]}"
"$DOCKER" build --file docker/Dockerfile \
  --label "org.opencontainers.image.revision=$(git rev-parse HEAD)" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.source=vaultline" \
  "${tag_args[@]}" "${extra[@]}" .

if ((push)); then
  for tag in "${tags[@]}"; do
    say "pushing $tag"
    "$DOCKER" push "$tag"
  done
fi
printf '%s\n' "${tags[0]}"
