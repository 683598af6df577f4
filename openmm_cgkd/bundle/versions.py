"""Version policy of bundles: which layouts (``format_version``) this package reads, and which
package versions' bundles it accepts (a bundle from a newer incompatible release is refused)."""
from __future__ import annotations

from openmm_cgkd.version import __version__
from openmm_cgkd.errors import BundleError

__all__ = ["FORMAT_VERSION", "SUPPORTED_FORMAT_VERSIONS", "MANIFEST_CHECKSUM_SINCE", "check_format_version", "check_package_version"]

# 1: checksums of the weight files; 2: also of the manifest's own content (checksums["manifest"])
FORMAT_VERSION = 2
SUPPORTED_FORMAT_VERSIONS = (1, 2)
MANIFEST_CHECKSUM_SINCE = 2


def check_format_version(fv, source: str) -> None:
    """:class:`BundleError` unless this package reads bundle layout ``fv``."""
    if fv not in SUPPORTED_FORMAT_VERSIONS:
        raise BundleError(f"{source}: incompatible bundle format_version {fv!r}; this openmm_cgkd "
                          f"{__version__} reads format(s) {list(SUPPORTED_FORMAT_VERSIONS)}")


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for p in v.split("+")[0].split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if not p.isdigit():
            break
    return tuple(parts) or (0,)


def check_package_version(bundle_version: str, source: str) -> None:
    """A bundle from a future *incompatible* release (newer major; for 0.x, newer minor) is refused;
    older releases are fine while their format_version is supported."""
    b, mine = _version_tuple(bundle_version), _version_tuple(__version__)
    b_key = b[:2] if b[:1] == (0,) else b[:1]
    m_key = mine[:2] if mine[:1] == (0,) else mine[:1]
    if b_key > m_key:
        raise BundleError(f"{source}: incompatible bundle: written by openmm_cgkd {bundle_version}, newer "
                          f"than the installed {__version__}; upgrade openmm_cgkd")


_check_package_version = check_package_version  # the name it had in openmm_cgkd.bundle
