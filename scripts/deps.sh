#!/usr/bin/env bash
# Installs (with apt, only when missing) the Debian packages that the real-component
# test harness in tests/harness needs: CNCF distribution, skopeo, umoci, containerd,
# podman, htpasswd, openssl, python3 for tests/support/tokenserver.py, setpriv (util-linux)
# to run acr as its pod's user in tests/deploy; and Azurite, the Azure Storage emulator (npm
# package `azurite`, pinned: 3.36 and later need Node 21+), into ~/.cache/acr/azurite (outside
# any checkout; $ACR_AZURITE_DIR overrides), where the tests' harness
# (tests/harness/azurite.rs) looks for `azurite-blob`.
#
# Idempotent and fast when everything is present (one dpkg-query, no apt).
# Needs root (or sudo) only when something has to be installed.
#
#   scripts/deps.sh          install what is missing
#   scripts/deps.sh --check  exit 1 (listing them) if any package is missing; install nothing
set -euo pipefail

PACKAGES=(
  docker-registry
  skopeo
  umoci
  containerd
  podman
  apache2-utils
  curl
  openssl
  ca-certificates
  python3
  python3-cryptography
  python3-yaml
  jq
  util-linux
  chromium-headless-shell
  nodejs
)

AZURITE_VERSION=3.35.0
AZURITE_DIR=${ACR_AZURITE_DIR:-$HOME/.cache/acr/azurite}
AZURITE_BIN=$AZURITE_DIR/node_modules/.bin/azurite-blob

log() { printf 'deps.sh: %s\n' "$*" >&2; }

missing_packages() {
  local installed p
  # One dpkg-query for all packages; unknown ones only print to stderr.
  installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${PACKAGES[@]}" 2>/dev/null \
    | awk '$NF == "installed" && $(NF-1) == "ok" { print $1 }' || true)
  for p in "${PACKAGES[@]}"; do
    grep -qx -- "$p" <<<"$installed" || printf '%s\n' "$p"
  done
}

# Whether the pinned Azurite is installed.
azurite_present() {
  [ -x "$AZURITE_BIN" ] &&
    grep -q "\"version\": \"$AZURITE_VERSION\"" "$AZURITE_DIR/node_modules/azurite/package.json" 2>/dev/null
}

# Installs the pinned Azurite from the npm registry (npm from Debian when node came without it).
install_azurite() {
  azurite_present && return 0
  if ! command -v npm >/dev/null 2>&1; then
    log "installing: npm"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
  fi
  log "installing: azurite@$AZURITE_VERSION into $AZURITE_DIR"
  mkdir -p "$AZURITE_DIR"
  npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >&2
  azurite_present || { log "azurite-blob is not at $AZURITE_BIN after npm install"; return 1; }
}

main() {
  local check_only=0
  case "${1:-}" in
    --check) check_only=1 ;;
    "") ;;
    -h | --help)
      sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
      return 0
      ;;
    *)
      log "unknown argument: $1 (use --check or nothing)"
      return 2
      ;;
  esac

  local missing=()
  mapfile -t missing < <(missing_packages)
  azurite_present || missing+=("azurite@$AZURITE_VERSION (npm)")
  if [ "${#missing[@]}" -eq 0 ]; then
    log "all ${#PACKAGES[@]} packages and azurite@$AZURITE_VERSION present"
    return 0
  fi
  if [ "$check_only" = 1 ]; then
    log "missing: ${missing[*]}"
    return 1
  fi

  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { log "need root to install: ${missing[*]}"; return 1; }
    sudo=(sudo)
  fi
  mapfile -t missing < <(missing_packages)
  if [ "${#missing[@]}" -eq 0 ]; then
    install_azurite
    log "done"
    return 0
  fi

  log "installing: ${missing[*]}"
  # No systemd here and policy-rc.d may deny service starts: the packages'
  # own docker-registry/containerd services are not wanted anyway.
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"

  mapfile -t missing < <(missing_packages)
  if [ "${#missing[@]}" -ne 0 ]; then
    log "still missing after apt-get install: ${missing[*]}"
    return 1
  fi
  install_azurite
  log "done"
}

main "$@"
