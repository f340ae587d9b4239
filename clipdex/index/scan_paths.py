"""The scanning rules of `index` (docs/reference.md) applied to single paths, for a watcher.

`scan` walks whole folders; a watcher hears of one path at a time (a file written, a folder
moved in) and must judge it exactly as the walk would: under a FOLDER, not hidden below it (unless
asked), not reached through a directory symlink, not inside the library, an image or a sidecar.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence

from clipdex.index.scan import (
    VIDEO_EXTENSIONS,
    FileStat,
    OnError,
    ScannedImage,
    _byte_extensions,
    is_under,
    scan_roots,
    skipped_name,
)  # fmt: skip

_SEP = os.sep.encode()
_TXT = (b".txt", b".TXT")

IMAGE, CAPTION = "image", "caption"


class PathRules:
    """Judges paths below ``roots`` as `scan` would (cached per folder: call `forget` after a batch)."""

    def __init__(self, roots: Sequence[bytes], include_hidden: bool, exclude: Sequence[bytes] = ()):
        self.roots = sorted(
            scan_roots(roots), key=len, reverse=True
        )  # deepest first: the FOLDER a path is under
        self.include_hidden = include_hidden
        self.excluded = [os.path.realpath(os.fsencode(p)) for p in exclude]
        self._dir_ok: dict[bytes, bool] = {}

    def forget(self) -> None:
        self._dir_ok.clear()

    def root_of(self, path: bytes) -> bytes | None:
        return next((r for r in self.roots if is_under(path, [r])), None)

    def admits(self, path: bytes) -> bool:
        """Whether the walk of its FOLDER would reach ``path`` (a file or folder; not its type)."""
        root = self.root_of(path)
        if root is None:
            return False
        if path == root:
            return not is_under(os.path.realpath(path), self.excluded)
        parent, name = os.path.split(path)
        return self._name_ok(name) and self._folder_ok(parent, root)

    def _name_ok(self, name: bytes) -> bool:
        return not skipped_name(name, self.include_hidden)

    def _folder_ok(self, folder: bytes, root: bytes) -> bool:
        """``folder`` is walked: root itself, or below it through visible, real (not symlinked) folders."""
        ok = self._dir_ok.get(folder)
        if ok is None:
            if folder == root:
                ok = not is_under(os.path.realpath(folder), self.excluded)
            else:
                parent, name = os.path.split(folder)
                ok = (
                    self._name_ok(name) and not os.path.islink(folder) and self._folder_ok(parent, root)
                    and not is_under(os.path.realpath(folder), self.excluded)
                )  # fmt: skip
            self._dir_ok[folder] = ok
        return ok

    @staticmethod
    def kind(path: bytes) -> str | None:
        """``image`` (an extension the installed Pillow opens, or a video's: a video is indexed
        like a picture, as its moments), ``caption`` (.txt) or None."""
        name = os.path.basename(path)
        dot = name.rfind(b".")
        if dot <= 0:
            return None
        ext = name[dot:]
        if ext.lower() in _byte_extensions() or ext.lower() in VIDEO_EXTENSIONS:
            return IMAGE
        return CAPTION if ext in _TXT else None

    def scanned(self, path: bytes, on_bad_file: OnError) -> ScannedImage | None:
        """The image at ``path`` with its sidecar, as the walk yields it; None when it is not one
        (gone, not a regular file; a dangling link or loop goes to ``on_bad_file``)."""
        image = _stat(path, on_bad_file)
        if image is None:
            return None
        if path[path.rfind(b".") :].lower() in VIDEO_EXTENSIONS:
            return ScannedImage(image, None, video=True)
        stem = path[: path.rfind(b".")]
        sidecar = None
        for ext in _TXT:  # both exist: the walk prefers the lower-case one
            if os.path.lexists(stem + ext):
                sidecar = _stat(stem + ext, lambda p, r: None)
                break
        return ScannedImage(image, sidecar)

    def images_of_caption(self, txt: bytes) -> list[bytes]:
        """The images a sidecar ``txt`` belongs to (same folder and stem)."""
        folder, name = os.path.split(txt)
        stem = name[: name.rfind(b".")]
        try:
            with os.scandir(folder) as it:
                names = [e.name for e in it if e.name.startswith(stem + b".")]
        except OSError:
            return []
        paths = [os.path.join(folder, n) for n in names]
        return [p for p in paths if self.kind(p) == IMAGE and p[: p.rfind(b".")] == txt[: txt.rfind(b".")]]


def _stat(path: bytes, on_error: OnError) -> FileStat | None:
    try:
        st = os.stat(path)  # follows file symlinks, as the walk does
    except FileNotFoundError:
        if os.path.islink(path):
            on_error(path, "dangling symbolic link")
        return None
    except OSError as e:
        on_error(path, "symbolic link loop" if e.errno == errno.ELOOP else (e.strerror or str(e)))
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return FileStat(path, st.st_mtime_ns, st.st_size)
