#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for pcgan: the system libraries Open3D needs
# (USB, EGL/GL, Vulkan for headless rendering) and a virtual environment .venv with pcgan
# installed in editable mode and its test extras. Safe to re-run: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="libusb-1.0-0 libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri libgomp1 libvulkan1 mesa-vulkan-drivers"
missing=""
for p in $APT_PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing system packages:$missing"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# torch comes from the package registry (its default CUDA build also runs on CPU). A CPU-only
# torch build would not do: torchvision's wheel (needed by lpips) is built against the default one.
.venv/bin/pip install -q -e ".[dev]"
echo "setup: ready (.venv/bin/pcgan)"
