# Sourced by tools/chromium_local.sh and tools/slurm_local.sh (not run): Debian packages installed with
# apt-get when missing, one apt-get at a time among spk's installers. Uses the caller's log, die, now and
# since functions.
#
#   install_debian_packages WHAT SUBCOMMAND IS_INSTALLED PACKAGE...
#       nothing when the command IS_INSTALLED succeeds; else, as root, install the packages with
#       --no-install-recommends (WHAT names them in messages; SUBCOMMAND is the caller's own, for the
#       'sudo' hint). Runs apt-get update first when the package lists are empty, and once more when the
#       install fails with the current lists. Exit 2 when not root, 1 on any other failure.

install_debian_packages() {
  local what=$1 subcommand=$2 is_installed=$3
  shift 3
  "$is_installed" && return 0
  [ "$(id -u)" = 0 ] || die 2 "$what not installed and installing needs root: run this as root" \
    "(sudo $0 $subcommand) or install the Debian packages yourself: apt-get install $*"
  command -v apt-get >/dev/null || die 1 "$what not installed and there is no apt-get to install it:" \
    "install $* (or your distribution's equivalent) and run this again"
  local t0 install=(apt-get install -y -q --no-install-recommends "$@")
  t0=$(now)
  # Two test processes may install at once, and dpkg's own lock makes the second apt-get fail instead of
  # waiting. fd 8: tools/slurm_local.sh start holds fd 9 on its own lock.
  exec 8>/tmp/spk-apt.lock
  flock 8
  if "$is_installed"; then
    log "installed meanwhile by another process"
  else
    log "installing $* with apt-get (once; the packages stay installed)"
    export DEBIAN_FRONTEND=noninteractive
    if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
      log "the apt package lists are empty: running apt-get update first"
      apt-get update -q >&2 || die 1 "apt-get update failed (is the Debian registry reachable?)"
      "${install[@]}" >&2 || die 1 "apt-get install $* failed"
    elif ! "${install[@]}" >&2; then
      log "apt-get install failed with the current package lists: running apt-get update and trying again"
      apt-get update -q >&2 || die 1 "apt-get update failed (is the Debian registry reachable?)"
      "${install[@]}" >&2 || die 1 "apt-get install $* failed"
    fi
    "$is_installed" || die 1 "apt-get installed $* but $what still not found on PATH"
    log "installed in $(since "$t0") s"
  fi
  exec 8>&-  # release the lock: daemons started next must not inherit it
}
