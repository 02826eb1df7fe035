#!/bin/sh
# Make a local base image for deploy/Dockerfile where no image registry is reachable: a minimal Debian bookworm
# root with Python 3.11 from Debian, made by debootstrap from this machine's own Debian mirror and imported into
# Docker under one name, so it is made once per machine and reused (tests/test_docker_image.py builds on it).
#   sh deploy/base-image.sh [name]          (default pipeline-bridge-base:bookworm; needs root and debootstrap)
#   docker build -f deploy/Dockerfile --build-arg BASE_IMAGE=pipeline-bridge-base:bookworm -t pipeline-bridge .
set -eu
name=${1:-pipeline-bridge-base:bookworm}
if docker image inspect "$name" >/dev/null 2>&1; then
  echo "$name is already there"
  exit 0
fi
# The first Debian archive apt is configured with (deb822 .sources or one-line sources.list), else Debian's CDN.
mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
  | grep -Eo 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n 1 | tr -d ' ' || true)
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror"
# The certificate authorities this machine adds (an egress proxy that re-signs TLS, as on the test machines):
# without them pip in the image build cannot reach PyPI.
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import --change 'CMD ["/bin/bash"]' - "$name"
echo "$name made from $mirror"
