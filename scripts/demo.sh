#!/usr/bin/env bash
# The main job, end to end on one machine: a local upstream registry (CNCF distribution), a
# test image pushed to it, `acr mirror start` in front of it, and a pull through acr with a
# real client (skopeo), checked digest for digest against the upstream.
#
#   bash scripts/demo.sh            run it and stop everything at the end
#   bash scripts/demo.sh --keep     leave the upstream and acr running (prints how to stop them)
#
# Needs root (or sudo) the first time, to install Debian packages (scripts/deps.sh).
set -euo pipefail

KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${ACR_DEMO_DIR:-$(mktemp -d /tmp/acr-demo.XXXXXX)}
mkdir -p "$WORK"
PIDS=()

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
cleanup() {
  if [ "$KEEP" = 0 ]; then
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # url what
  for _ in $(seq 1 200); do curl -fs -o /dev/null --max-time 1 "$1" && return 0; sleep 0.1; done
  die "$2 did not come up at $1"
}

say "Installing what is missing (docker-registry, skopeo, umoci, ...)"
bash "$ROOT/scripts/deps.sh"

say "Building acr (release)"
(cd "$ROOT" && cargo build --release --locked)
ACR="$ROOT/target/release/acr"

UPSTREAM_PORT=$(free_port)
ACR_PORT=$(free_port)

say "Starting the upstream: CNCF distribution on 127.0.0.1:$UPSTREAM_PORT"
cat > "$WORK/registry.yml" <<YAML
version: 0.1
log: {level: info, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $WORK/registry}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$UPSTREAM_PORT}
YAML
docker-registry serve "$WORK/registry.yml" > "$WORK/registry.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$UPSTREAM_PORT/v2/" "the upstream registry"

say "Building a test image with umoci and pushing it upstream as library/hello:1"
mkdir -p "$WORK/src"
echo "hello from the acr demo" > "$WORK/src/hello.txt"
find "$WORK/src" -exec touch -h -d 2000-01-01T00:00:00Z {} +
(
  cd "$WORK"
  umoci init --layout image >/dev/null
  umoci new --image image:1 >/dev/null
  umoci insert --image image:1 --history.created 2000-01-01T00:00:00Z --history.created_by demo src / >/dev/null
  umoci config --image image:1 --created 2000-01-01T00:00:00Z --history.created 2000-01-01T00:00:00Z \
    --history.created_by demo --architecture amd64 --os linux --config.cmd /hello.txt >/dev/null
)
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$WORK/image:1" \
  "docker://127.0.0.1:$UPSTREAM_PORT/library/hello:1"

say "Starting acr on 127.0.0.1:$ACR_PORT (pipeline: examples/pull-through.runmd)"
sed -e "s/127.0.0.1:5000/127.0.0.1:$UPSTREAM_PORT/g" -e "s/127.0.0.1:8578/127.0.0.1:$ACR_PORT/g" \
  "$ROOT/examples/pull-through.runmd" > "$WORK/mirror.runmd"
"$ACR" --runmd-path "$WORK/mirror.runmd" dump
"$ACR" --runmd-path "$WORK/mirror.runmd" mirror start > "$WORK/acr.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$ACR_PORT/v2/" "acr"

say "Pulling library/hello:1 through acr with skopeo"
skopeo --insecure-policy copy --src-tls-verify=false \
  "docker://127.0.0.1:$ACR_PORT/library/hello:1" "oci:$WORK/pulled:1"
direct=$(skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$UPSTREAM_PORT/library/hello:1" | sha256sum | cut -d' ' -f1)
mirrored=$(skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$ACR_PORT/library/hello:1" | sha256sum | cut -d' ' -f1)
echo "manifest digest from the upstream: sha256:$direct"
echo "manifest digest through acr:       sha256:$mirrored"
[ "$direct" = "$mirrored" ] || die "the digests differ"
(cd "$WORK" && umoci unpack --image pulled:1 bundle >/dev/null)
echo "the pulled image's /hello.txt says: $(cat "$WORK/bundle/rootfs/hello.txt")"

say "Pulling it again: this time from acr's store (counters from GET /metrics)"
skopeo --insecure-policy copy -q --src-tls-verify=false \
  "docker://127.0.0.1:$ACR_PORT/library/hello:1" "oci:$WORK/pulled-again:1"
curl -fs "http://127.0.0.1:$ACR_PORT/metrics" | grep -E '^acr_(cache_hits_total|cache_misses_total|upstream_requests_total|store_objects) '

say "What acr logged (one line per request)"
grep ' request ' "$WORK/acr.log" | sed 's/^[^ ]* *//' | tail -n 8
echo
echo "containerd can use the hosts.toml acr wrote: $WORK/.work/etc/containerd/certs.d/127.0.0.1:$UPSTREAM_PORT/hosts.toml"
if [ "$KEEP" = 1 ]; then
  echo "Still running: upstream http://127.0.0.1:$UPSTREAM_PORT, acr http://127.0.0.1:$ACR_PORT. Stop with: kill ${PIDS[*]}"
fi
echo "demo: OK ($WORK)"
