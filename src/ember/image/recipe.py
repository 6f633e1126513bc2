"""What goes into a base image, and the hash that names it in the cache."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

# Bump when the build procedure changes in a way the recipe fields do not show.
BUILD_FORMAT = 1

DEFAULT_PACKAGES = (
    "python3",
    "python3-pip",
    "python3-venv",
    "nodejs",
    "npm",
    "git",
    "curl",
    "ca-certificates",
    "sudo",
    "procps",
    "iproute2",
    "tar",
    "gzip",
    "xz-utils",
    "zstd",
    "unzip",
    "less",
)

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"


@dataclass(frozen=True)
class ImageRecipe:
    """Everything that decides the bytes of a base image.

    The defaults follow the reference's sandbox environment: a non-root user
    with uid 1000 and passwordless sudo, and `/vercel/sandbox` as the working
    directory the API reports (see docs/image.md for why these names).
    """

    suite: str = "bookworm"
    mirror: str = DEFAULT_MIRROR
    security_mirror: str = DEFAULT_SECURITY_MIRROR
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    user: str = "vercel-sandbox"
    uid: int = 1000
    workdir: str = "/vercel/sandbox"
    # Host uid/gid that the image's root maps to (0 = no user namespace).
    # Files are stored shifted on disk so a user-namespaced session sees
    # them with their in-image owners.
    id_shift: int = 0
    extra: tuple[str, ...] = field(default=())

    def with_id_shift(self, id_shift: int) -> ImageRecipe:
        return replace(self, id_shift=id_shift)

    def sources(self) -> list[str]:
        """apt source lines handed to mmdebstrap."""
        lines = [
            f"deb {self.mirror} {self.suite} main",
            f"deb {self.mirror} {self.suite}-updates main",
        ]
        if self.security_mirror:
            lines.append(f"deb {self.security_mirror} {self.suite}-security main")
        return lines

    def digest(self) -> str:
        payload = {"format": BUILD_FORMAT, **asdict(self)}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def image_id(self) -> str:
        """Short, stable name of the image in the cache."""
        return self.digest()[:16]

    def to_json(self) -> dict[str, object]:
        return asdict(self)
