"""Which system libraries Open3D's import and its headless renderers need, and which are missing.

Open3D's wheel links ``libusb-1.0`` and ``libgomp`` (its import fails without them), its
legacy visualizer renders offscreen through EGL + OpenGL (software: Mesa's ``swrast`` driver),
and its Filament renderer through Vulkan (software: Mesa's lavapipe). Each library maps to the
Debian/Ubuntu package that ships it, so a failure can end in one actionable line::

    Open3D needs libusb-1.0-0: sudo apt-get install -y libusb-1.0-0

Detection loads each library with ``ctypes.CDLL`` (what the dynamic linker will do), falling
back to ``ctypes.util.find_library``; driver files (Mesa DRI, Vulkan ICDs) are looked up on
disk. Only Linux is checked: elsewhere the lists are empty.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import logging
import sys
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SysLib:
    name: str                   # what users see, e.g. "libEGL"
    package: str                # Debian/Ubuntu package that ships it
    sonames: tuple[str, ...] = ()   # shared objects to dlopen; any one loading is enough
    find_name: str | None = None    # ctypes.util.find_library name ("EGL" for libEGL.so)
    files: tuple[str, ...] = ()     # glob patterns of driver files; any one existing is enough


LIBS: dict[str, SysLib] = {
    "libusb": SysLib("libusb-1.0", "libusb-1.0-0", ("libusb-1.0.so.0",), "usb-1.0"),
    "libgomp": SysLib("libgomp", "libgomp1", ("libgomp.so.1",), "gomp"),
    "libEGL": SysLib("libEGL", "libegl1", ("libEGL.so.1",), "EGL"),
    "libEGL_mesa": SysLib("libEGL_mesa (Mesa EGL vendor)", "libegl-mesa0", ("libEGL_mesa.so.0",)),
    "libGL": SysLib("libGL", "libgl1", ("libGL.so.1",), "GL"),
    "swrast": SysLib("Mesa software OpenGL driver (swrast_dri.so)", "libgl1-mesa-dri",
                     files=("/usr/lib/*/dri/swrast_dri.so", "/usr/lib/dri/swrast_dri.so",
                            "/usr/lib64/dri/swrast_dri.so")),
    "libvulkan": SysLib("libvulkan", "libvulkan1", ("libvulkan.so.1",), "vulkan"),
    "lavapipe": SysLib("Mesa software Vulkan driver (lavapipe ICD)", "mesa-vulkan-drivers",
                       files=("/usr/share/vulkan/icd.d/lvp_icd*.json", "/etc/vulkan/icd.d/lvp_icd*.json")),
}

# What each use needs. Software drivers are listed because a headless server without a GPU
# driver has nothing else; with a vendor driver (NVIDIA's EGL/Vulkan) they are not needed, so
# callers report them only after the backend itself failed.
NEEDS: dict[str, tuple[str, ...]] = {
    "open3d": ("libusb", "libgomp"),
    "egl": ("libEGL", "libGL", "libEGL_mesa", "swrast"),
    "filament": ("libvulkan", "lavapipe"),
}
PURPOSE = {"open3d": "Open3D", "egl": "Open3D's EGL renderer", "filament": "Open3D's Vulkan renderer"}


def is_present(lib: SysLib) -> bool:
    """Whether the dynamic linker can load ``lib`` (or its driver file exists)."""
    if lib.files:
        return any(glob.glob(pattern) for pattern in lib.files)
    for soname in lib.sonames:
        try:
            ctypes.CDLL(soname)
            return True
        except OSError:
            pass
    return bool(lib.find_name and ctypes.util.find_library(lib.find_name))


def missing(use: str, probe=is_present) -> list[SysLib]:
    """Libraries that ``use`` ("open3d", "egl", "filament") needs and this machine lacks.

    ``probe`` decides presence (tests pass a fake). Always empty off Linux."""
    if use not in NEEDS:
        raise ValueError(f"unknown use {use!r}: one of {', '.join(NEEDS)}")
    if not sys.platform.startswith("linux"):
        return []
    gone = [LIBS[key] for key in NEEDS[use] if not probe(LIBS[key])]
    if gone:
        log.debug("%s: missing %s", use, ", ".join(lib.name for lib in gone))
    return gone


def install_hint(use: str, libs: list[SysLib]) -> str:
    """One line naming the apt packages to install, e.g.
    ``Open3D needs libusb-1.0-0: sudo apt-get install -y libusb-1.0-0``; empty when none."""
    if not libs:
        return ""
    packages = list(dict.fromkeys(lib.package for lib in libs))
    return f"{PURPOSE.get(use, use)} needs {', '.join(packages)}: sudo apt-get install -y {' '.join(packages)}"


def hint(use: str) -> str:
    """:func:`install_hint` for what is missing on this machine (empty when nothing is)."""
    return install_hint(use, missing(use))
