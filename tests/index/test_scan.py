"""Folder walker: docs/reference.md "Scanning rules for `index`" (formats, hidden, symlinks, sidecars)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from clipdex.errors import ClipdexError
from clipdex.index import scan as scan_mod
from clipdex.index.scan import FileStat, check_folders, image_extensions, is_under, scan, scan_roots
from clipdex.inputs.paths import display_path


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def names(root: Path, **kwargs) -> list[str]:
    """Scanned image paths relative to root, in yielded order."""
    base = os.fsencode(root) + b"/"
    return [os.fsdecode(s.image.path.removeprefix(base)) for s in scan([root], **kwargs)]


def test_image_extensions() -> None:
    exts = image_extensions()
    for e in ".jpg .jpeg .png .webp .gif .bmp .tif .tiff .ppm .pgm .pbm .pnm .jp2".split():
        assert e in exts
    assert not {".pdf", ".eps", ".txt", ".JPG"} & exts
    assert image_extensions() is exts  # cached


def test_formats_case_and_order(tmp_path: Path) -> None:
    for n in ["b/X.JPG", "y.Png", "a.webp", "notes.txt", "doc.doc", "noext", "z.jpeg", "b/a.tif"]:
        touch(tmp_path / n, b"12345")
    assert names(tmp_path) == ["a.webp", "y.Png", "z.jpeg", "b/X.JPG", "b/a.tif"]
    first = next(iter(scan([tmp_path])))
    st = os.stat(tmp_path / "a.webp")
    assert first.image == FileStat(os.fsencode(tmp_path / "a.webp"), st.st_mtime_ns, 5)
    assert first.sidecar is None


def test_hidden_and_appledouble(tmp_path: Path) -> None:
    for n in ["a.jpg", ".h.jpg", "._a.jpg", ".hid/b.jpg", "sub/.c.png", "sub/._d.png", ".hid/._e.jpg"]:
        touch(tmp_path / n)
    assert names(tmp_path) == ["a.jpg"]
    assert names(tmp_path, include_hidden=True) == [".h.jpg", "a.jpg", ".hid/b.jpg", "sub/.c.png"]


def test_folder_inside_hidden_dir_is_scanned(tmp_path: Path) -> None:
    touch(tmp_path / ".photos" / "2024" / "a.jpg")
    touch(tmp_path / ".photos" / "2024" / ".b.jpg")
    assert names(tmp_path / ".photos") == ["2024/a.jpg"]
    assert names(tmp_path / ".photos" / "2024") == ["a.jpg"]


def test_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    touch(outside / "target.jpg", b"abcdef")
    touch(outside / "dir" / "in_dir.jpg")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.jpg").symlink_to(outside / "target.jpg")
    (root / "dirlink").symlink_to(outside / "dir", target_is_directory=True)
    (root / "broken.jpg").symlink_to(tmp_path / "missing.jpg")
    (root / "dir.jpg").symlink_to(outside / "dir", target_is_directory=True)  # a dir named like an image
    (root / "loop1.jpg").symlink_to(root / "loop2.jpg")
    (root / "loop2.jpg").symlink_to(root / "loop1.jpg")
    bad: list[tuple[bytes, str]] = []
    (scanned,) = list(
        scan([root], on_error=lambda p, m: pytest.fail(m), on_bad_file=lambda p, m: bad.append((p, m)))
    )
    # Dangling links and loops are reported as bad files (an index run counts them as failed).
    assert bad == [
        (os.fsencode(root / "broken.jpg"), "dangling symbolic link"),
        (os.fsencode(root / "loop1.jpg"), "symbolic link loop"),
        (os.fsencode(root / "loop2.jpg"), "symbolic link loop"),
    ]
    # The link's own (user-visible) path, with the target's stat.
    assert scanned.image.path == os.fsencode(root / "link.jpg")
    assert scanned.image.size == 6
    assert scanned.image.mtime_ns == os.stat(outside / "target.jpg").st_mtime_ns


def test_symlinked_folder_argument_is_followed(tmp_path: Path) -> None:
    touch(tmp_path / "real" / "a.jpg")
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    assert [s.image.path for s in scan([tmp_path / "alias"])] == [os.fsencode(tmp_path / "alias" / "a.jpg")]
    # The same directory under two names is walked once (first FOLDER's names win).
    assert len(list(scan([tmp_path / "alias", tmp_path / "real"]))) == 1


def test_exclude(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "lib" / "thumbs" / "t.jpg")
    touch(tmp_path / "lib" / "x.png")
    (tmp_path / "lib-alias").symlink_to(tmp_path / "lib", target_is_directory=True)
    assert names(tmp_path, exclude=[tmp_path / "lib"]) == ["a.jpg"]
    # Compared on real paths: excluding through a symlinked name works too.
    assert names(tmp_path, exclude=[str(tmp_path / "lib-alias")]) == ["a.jpg"]
    # A FOLDER inside the excluded dir yields nothing.
    assert list(scan([tmp_path / "lib" / "thumbs"], exclude=[tmp_path / "lib"])) == []


def test_sidecars(tmp_path: Path) -> None:
    for n in ["a.jpg", "a.png", "a.txt", "b.jpg", "c.JPG", "c.TXT", "d.jpg", "sub/a.txt", "e.txt.jpg"]:
        touch(tmp_path / n, b"x")
    (tmp_path / "d.txt").symlink_to(tmp_path / "nope.txt")  # broken sidecar link: no sidecar
    got = {os.path.basename(s.image.path): s.sidecar for s in scan([tmp_path])}
    a_txt = os.fsencode(tmp_path / "a.txt")
    assert got[b"a.jpg"] is not None and got[b"a.jpg"].path == a_txt
    assert got[b"a.png"] == got[b"a.jpg"]
    assert got[b"b.jpg"] is None
    assert got[b"c.JPG"] is not None and got[b"c.JPG"].path == os.fsencode(tmp_path / "c.TXT")
    assert got[b"d.jpg"] is None
    assert got[b"e.txt.jpg"] is None


def test_non_utf8_name(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9.jpg"
    os.close(os.open(raw, os.O_CREAT | os.O_WRONLY, 0o644))
    (scanned,) = list(scan([os.fsencode(tmp_path)]))
    assert scanned.image.path == raw
    shown = display_path(scanned.image.path)
    assert shown.endswith("caf\\xe9.jpg")
    assert display_path(os.fsdecode(raw)) == shown  # surrogateescape'd str: same rendering
    assert display_path("/photos/café.jpg") == "/photos/café.jpg"
    assert display_path("/photos/café.jpg".encode()) == "/photos/café.jpg"


def test_overlapping_folders_yield_once(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "sub" / "b.jpg")
    paths = [s.image.path for s in scan([tmp_path / "sub", tmp_path, str(tmp_path) + "/"])]
    assert sorted(paths) == sorted({os.fsencode(tmp_path / "a.jpg"), os.fsencode(tmp_path / "sub" / "b.jpg")})
    assert len(paths) == 2


def test_check_folders(tmp_path: Path) -> None:
    f = touch(tmp_path / "file.jpg")
    check_folders([tmp_path, str(tmp_path), os.fsencode(tmp_path)])
    for bad, word in [(tmp_path / "missing", "folder not found"), (f, "not a folder")]:
        with pytest.raises(ClipdexError, match=f"{word}: .*{bad.name}"):
            check_folders([tmp_path, bad])
    # scan() checks eagerly, before yielding (and before a generator is even iterated).
    with pytest.raises(ClipdexError, match="missing"):
        scan([tmp_path, tmp_path / "missing"])


def test_scan_roots_and_is_under(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert scan_roots(["x/../y/", "y", b"/a//b"]) == [os.fsencode(tmp_path / "y"), b"/a/b"]
    roots = [b"/a/b", b"/"]
    assert is_under(b"/a/b", [b"/a/b"])
    assert is_under(b"/a/b/c.jpg", [b"/a/b"])
    assert not is_under(b"/a/bc/d.jpg", [b"/a/b"])
    assert not is_under(b"/a", [b"/a/b"])
    assert is_under(b"/anything", roots)
    assert not is_under(b"/x.jpg", [])


def test_unreadable_directory_reported_and_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "locked" / "b.jpg")
    touch(tmp_path / "z" / "c.jpg")
    locked = os.fsencode(tmp_path / "locked")
    real_scandir = os.scandir

    def fake_scandir(path):
        if path == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(scan_mod.os, "scandir", fake_scandir)
    errors: list[tuple[bytes, str]] = []
    got = names(tmp_path, on_error=lambda p, m: errors.append((p, m)))
    assert got == ["a.jpg", "z/c.jpg"]
    assert errors == [(locked, "Permission denied")]
    # Without a callback: a warning, still not fatal.
    with pytest.warns(UserWarning, match="locked: Permission denied"):
        assert names(tmp_path) == ["a.jpg", "z/c.jpg"]


def test_unreadable_directory_chmod(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    locked = tmp_path / "locked"
    touch(locked / "b.jpg")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: chmod 000 does not block reading (see the monkeypatched test)")
        errors: list[tuple[bytes, str]] = []
        assert names(tmp_path, on_error=lambda p, m: errors.append((p, m))) == ["a.jpg"]
        assert [p for p, _ in errors] == [os.fsencode(locked)]
    finally:
        locked.chmod(0o755)


def test_many_files(tmp_path: Path) -> None:
    """~2,000 empty images in nested dirs: all found, in order; prints the time (not asserted)."""
    expected = []
    for i in range(20):
        for j in range(5):
            d = tmp_path / f"d{i:02d}" / f"e{j}"
            d.mkdir(parents=True)
            for k in range(20):
                (d / f"{k:02d}.jpg").touch()
                expected.append(os.fsencode(d / f"{k:02d}.jpg"))
    start = time.perf_counter()
    got = [s.image.path for s in scan([tmp_path])]
    elapsed = time.perf_counter() - start
    assert got == expected
    print(f"scanned {len(got)} files in {elapsed * 1000:.1f} ms")
