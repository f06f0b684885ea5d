#!/usr/bin/env bash
# Installs what building and testing bccl needs on Debian 12, and nothing that is already there.
# Safe to run repeatedly; needs root (or sudo) only when something is missing.
set -euo pipefail

# rdma-core .. perftest: the verbs transport and its comparison; qemu .. cpio: the soft-RoCE VM
# that tests it on machines without RDMA (tests/verbs/).
packages=(build-essential cmake ninja-build pkg-config libgtest-dev libgmock-dev
          libbenchmark-dev libhwloc-dev iproute2 procps libucx-dev ucx-utils debootstrap
          rdma-core ibverbs-providers libibverbs-dev ibverbs-utils perftest
          qemu-system-x86 linux-image-amd64 busybox-static cpio kmod)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
