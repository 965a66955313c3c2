#!/bin/sh
# Node set-up check run by the `install` event of the default acr pipeline.
# It reports what the node has and what is missing; it changes nothing.
#   ACR_OPERATING_SYSTEM  the OS named at `acr init` (ubuntu, debian, azurelinux, ...)
#   ACR_TELEPORT_FORMAT   the streaming format named at `acr init` (overlaybd, or none)
os=${ACR_OPERATING_SYSTEM:-ubuntu}
format=${ACR_TELEPORT_FORMAT:-overlaybd}
echo "acr: node set-up check for $os"
if command -v containerd >/dev/null 2>&1; then
  echo "acr: containerd found at $(command -v containerd)"
else
  echo "acr: containerd not found; install it, then point it at acr with hosts.toml (config_path)"
fi
if [ "$format" = "overlaybd" ]; then
  if [ -x /opt/overlaybd/snapshotter/overlaybd-snapshotter ] || command -v overlaybd-snapshotter >/dev/null 2>&1; then
    echo "acr: overlaybd snapshotter found"
  else
    echo "acr: overlaybd snapshotter not found; streamed images fall back to ordinary pulls"
  fi
fi
exit 0
