#!/usr/bin/env bash
# Installs what the PyTorch backend (python/, tests/torch/, examples/pytorch_ddp.py) needs on
# Debian 12: Debian's own PyTorch 1.13 for /usr/bin/python3 and pybind11. Kept apart from
# install-deps.sh because it is large (hundreds of MB) and only the torch tier needs it.
# Safe to run repeatedly; runs apt-get only when something is missing.
set -euo pipefail

# libopenblas0: torch's recommended BLAS; without it Debian falls back to the reference BLAS, which
# makes every Linear layer (and so examples/pytorch_ddp.py's compute) tens of times slower.
packages=(python3-torch libtorch-dev pybind11-dev python3-pybind11 python3-numpy libopenblas0)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-torch-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-torch-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# A fresh image has no package lists; an old one may lack these packages' current versions.
if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>/dev/null; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
