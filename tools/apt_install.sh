# Sourced by tools/chromium_local.sh and tools/slurm_local.sh (not run): Debian packages installed with
# apt-get, one apt-get at a time among spk's installers. Uses the caller's log and die functions.
#
#   apt_install_locked IS_INSTALLED PACKAGE...
#       install the packages with --no-install-recommends, unless the command IS_INSTALLED succeeds once
#       the lock is held (another process installed them meanwhile); runs apt-get update first when the
#       package lists are empty, and once more when the install fails with the current lists

apt_install_locked() {
  local is_installed=$1
  shift
  local install=(apt-get install -y -q --no-install-recommends "$@")
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
  fi
  exec 8>&-  # release the lock: daemons started next must not inherit it
}
