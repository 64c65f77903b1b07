# shellcheck shell=bash
# apt_install PACKAGE...: the Debian packages given, installed as root; anywhere else (not root,
# not Debian) it says what to install and fails. Sourced by scripts/stack.sh and
# scripts/kafka.sh, which define `log` and `die`; dpkg's output goes to $REPO_ROOT/.stack/logs/
# apt.log, the terminal gets one line per step or the log's end.
apt_install() {
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    die "missing $*: install it (Debian/Ubuntu: sudo apt-get install -y $*; macOS: brew install $*), then rerun"
  fi
  local apt_log="$REPO_ROOT/.stack/logs/apt.log"
  mkdir -p "$(dirname "$apt_log")"
  # Package lists fetched in the last hour will do.
  if ! find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | grep -q .; then
    log "apt-get update (log: $apt_log)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$apt_log" 2>&1 ||
      die "apt-get update failed; the end of $apt_log: $(tail -n 5 "$apt_log")"
  fi
  log "apt-get install $* (log: $apt_log)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
    </dev/null >>"$apt_log" 2>&1 ||
    die "apt-get install $* failed; the end of $apt_log: $(tail -n 5 "$apt_log")"
}
