"""The folder walker behind `clipdex index FOLDER...`: finds image files (and sidecar captions).

The walk itself only lists and stats (no model, no database); the one file read here is
`content_hash`, which the indexing run calls to recognise a moved file. Sidecar captions are read
by `clipdex.inputs.sidecars`. Paths are bytes end to end so that
file names that are not valid UTF-8 survive a round trip to the library and back. The rules
are docs/reference.md's "Scanning rules for `index`".
"""

from __future__ import annotations

import errno
import functools
import hashlib
import importlib.util
import os
import stat
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from clipdex.errors import ClipdexError
from clipdex.inputs.paths import display_path

PathArg = str | bytes | os.PathLike
OnError = Callable[[bytes, str], None]

_SEP = os.sep.encode()
_TXT = (b".txt", b".TXT")
HASH_BLOCK = 64 * 1024

# Always scanned: the formats docs/reference.md promises, whatever Pillow's registry says.
_ALWAYS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
_ALWAYS |= {".pnm", ".jp2", ".mpo"}  # .mpo is opened by the JPEG plugin, not registered for open
# Registered with an open plugin, but junk for a photo library: they need external tools (eps/ps:
# ghostscript), are stub handlers that raise without an app-installed handler (bufr, grib, hdf5,
# wmf/emf off Windows), only identify (mpeg), are not images (iim = IPTC metadata), or collide with
# common non-image files (.fit = Garmin activity files).
_JUNK = {".eps", ".ps", ".pdf", ".bufr", ".grib", ".h5", ".hdf", ".emf", ".wmf", ".mpeg", ".mpg"}
_JUNK |= {".iim", ".fit"}


@dataclass(frozen=True, slots=True)
class FileStat:
    """A file as seen by stat: absolute, unresolved (user-visible) path as bytes."""

    path: bytes
    mtime_ns: int
    size: int


@dataclass(frozen=True, slots=True)
class ScannedImage:
    """An image file and its sidecar caption (`photo.txt` beside `photo.jpg`), if any."""

    image: FileStat
    sidecar: FileStat | None
    video: bool = False  # a video file (by its extension; its content is probed when decoded)


@functools.cache
def image_extensions() -> frozenset[str]:
    """Lower-case extensions (with dot) that the installed Pillow can open, minus junk formats."""
    from PIL import Image, features

    Image.init()
    exts = {e.lower() for e, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    exts -= _JUNK
    exts |= _ALWAYS
    if importlib.util.find_spec("pillow_heif") is not None:
        exts |= {".heic", ".heif", ".avif"}
    elif not features.check("avif"):
        # Pillow registers its AVIF plugin even when built without libavif; then it cannot open.
        exts -= {".avif", ".avifs"}
    return frozenset(exts)


@functools.cache
def skipped_name(name: bytes, include_hidden: bool) -> bool:
    """Whether the walk skips an entry by its name: hidden (unless asked for) or AppleDouble (always)."""
    return name[:1] == b"." and (not include_hidden or name.startswith(b"._"))


def _byte_extensions() -> frozenset[bytes]:
    return frozenset(e.encode() for e in image_extensions())


# The video extensions `index` scans (clipdex.retrieval.video.VIDEO_EXTENSIONS; not imported
# from there to keep the walk free of the retrieval package).
VIDEO_EXTENSIONS = frozenset({b".mp4", b".m4v", b".mov", b".mkv", b".webm", b".avi"})


def check_folders(folders: Sequence[PathArg]) -> None:
    """Raise ClipdexError for the first FOLDER that does not exist or is not a directory."""
    for folder in folders:
        if not os.path.isdir(folder):
            what = "not a folder" if os.path.lexists(folder) else "folder not found"
            raise ClipdexError(f"{what}: {display_path(os.fsencode(folder))}")


def scan_roots(folders: Sequence[PathArg]) -> list[bytes]:
    """Absolute, normalised (not symlink-resolved) bytes roots, duplicates dropped, order kept."""
    return list(dict.fromkeys(os.path.abspath(os.fsencode(f)) for f in folders))


def is_under(path: bytes, roots: list[bytes]) -> bool:
    """True when `path` equals or lies below one of `roots`, compared component-wise."""
    for root in roots:
        if path == root or path.startswith(root if root.endswith(_SEP) else root + _SEP):
            return True
    return False


def content_hash(path: bytes, size: int) -> bytes | None:
    """A fingerprint of a file's first and last blocks (and its size), to recognise a moved file."""
    h = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
    try:
        with open(path, "rb") as f:
            h.update(f.read(HASH_BLOCK))
            if size > HASH_BLOCK:
                f.seek(max(HASH_BLOCK, size - HASH_BLOCK))
                h.update(f.read(HASH_BLOCK))
    except OSError:
        return None
    return h.digest()


def _stat(path: bytes, entry: os.DirEntry, on_error: OnError) -> FileStat | None:
    """Stat through file symlinks; None (reported to ``on_error``) for dangling links and loops;
    None silently for non-regular targets and files deleted since listing."""
    try:
        st = entry.stat()  # follows symlinks; cached on the entry
    except FileNotFoundError:
        if entry.is_symlink():
            on_error(path, "dangling symbolic link")
        return None  # else deleted since listing: nothing to index
    except OSError as e:
        on_error(path, "symbolic link loop" if e.errno == errno.ELOOP else (e.strerror or str(e)))
        return None
    if not stat.S_ISREG(st.st_mode):
        return None  # e.g. a symlink to a directory that happens to be named x.jpg
    return FileStat(path, st.st_mtime_ns, st.st_size)


def _ignore(path: bytes, message: str) -> None:
    """A broken sidecar link is simply no sidecar."""


def _warn(path: bytes, message: str) -> None:
    warnings.warn(f"{display_path(path)}: {message}", stacklevel=3)


def scan(
    folders: Sequence[PathArg],
    *,
    include_hidden: bool = False,
    exclude: Sequence[PathArg] = (),
    on_error: OnError | None = None,
    on_bad_file: OnError | None = None,
    videos: bool = False,
) -> Iterator[ScannedImage]:
    """Yield every image (and with ``videos`` every video) under `folders`, depth-first in sorted
    name order (reproducible).

    Folders are checked eagerly (ClipdexError before any output). Per-path problems (an
    unreadable directory) go to `on_error(path, message)` (default: a warning) and are skipped;
    image entries that cannot be statted (a dangling link, a symlink loop) go to `on_bad_file`
    (default: `on_error`).
    """
    check_folders(folders)
    excluded = {os.path.realpath(os.fsencode(p)) for p in exclude}
    on_error = on_error or _warn
    return _walk(scan_roots(folders), include_hidden, excluded, on_error, on_bad_file or on_error, videos)


def _walk(
    roots: list[bytes], include_hidden: bool, excluded: set[bytes], on_error: OnError, on_bad_file: OnError,
    videos: bool,
) -> Iterator[ScannedImage]:  # fmt: skip
    exts = _byte_extensions()
    video_exts = VIDEO_EXTENSIONS if videos else frozenset()
    # Real paths of directories already walked: overlapping FOLDERs (or two FOLDERs that are the
    # same directory through a symlink) are walked once. Hidden-ness is judged by child name only,
    # so a directory yields the same files whichever FOLDER reached it first.
    walked: set[bytes] = set()
    excluded_roots = list(excluded)
    for root in roots:
        real_root = os.path.realpath(root)
        if is_under(real_root, excluded_roots):
            continue
        # Stack of (user-visible path, real path). Directory symlinks are never followed, so a
        # child's real path is its parent's real path + name: no realpath() call per directory.
        stack = [(root, real_root)]
        while stack:
            path, real = stack.pop()
            if real in walked or real in excluded:
                continue
            walked.add(real)
            try:
                with os.scandir(path) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as e:
                on_error(path, e.strerror or str(e))
                continue
            subdirs: list[tuple[bytes, bytes]] = []
            images: list[tuple[os.DirEntry, bytes]] = []
            found_videos: list[os.DirEntry] = []
            texts: dict[bytes, os.DirEntry] = {}
            for entry in entries:
                name = entry.name
                if skipped_name(name, include_hidden):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append((entry.path, os.path.join(real, name)))
                    continue
                dot = name.rfind(b".")
                if dot <= 0:
                    continue  # no extension (".jpg" alone is a hidden name, not an extension)
                ext = name[dot:]
                if ext.lower() in exts:
                    images.append((entry, name[:dot]))
                elif ext.lower() in video_exts:
                    found_videos.append(entry)
                elif ext in _TXT:
                    if ext == b".txt" or name[:dot] not in texts:
                        texts[name[:dot]] = entry  # both exist: prefer the lower-case one
            sidecars: dict[bytes, FileStat | None] = {}
            for entry, stem in images:
                image = _stat(entry.path, entry, on_bad_file)
                if image is None:
                    continue
                sidecar = None
                if stem in texts:
                    if stem not in sidecars:  # a.jpg and a.png share one stat of a.txt
                        txt = texts[stem]
                        sidecars[stem] = _stat(txt.path, txt, _ignore)
                    sidecar = sidecars[stem]
                yield ScannedImage(image, sidecar)
            for entry in found_videos:
                video = _stat(entry.path, entry, on_bad_file)
                if video is not None:
                    yield ScannedImage(video, None, video=True)
            # Reversed onto the stack so that subdirectories are walked in sorted order.
            stack.extend(reversed(subdirs))
