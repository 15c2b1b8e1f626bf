#!/usr/bin/env python3
"""Pack folders and files into a reproducible .tgz.

The same content always gives a byte-identical tarball (sorted entries, fixed mtime,
root:root owner, normalised modes, gzip header without time or name): its SHA-256 can
be recorded once and checked on every host, and Ansible's copy of it reports a change
only when the content changed. Byte-code caches are left out.

A stamp file (<out>.inputs) holds a digest of the inputs and options: when it matches
and the tarball exists nothing is written and the script prints "unchanged", otherwise
it prints "changed" (Ansible's changed_when reads this).

Usage: pack_tgz.py --root DIR --out FILE.tgz [--mtime EPOCH] [--level 1-9] ITEM [ITEM ...]
Each ITEM (a folder or a file) keeps its path relative to DIR in the tarball.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import stat
import sys
import tarfile
import tempfile
from pathlib import Path

SKIPPED_DIRS = {"__pycache__"}
SKIPPED_SUFFIXES = (".pyc", ".pyo")


def walk(root: Path, items: list[str]) -> list[Path]:
    """Every entry of the items (each item, then all below a folder), sorted by tar name."""
    entries: list[Path] = []
    for item in items:
        path = root / item
        entries.append(path)
        for folder, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
            base = Path(folder)
            entries.extend(base / d for d in dirs)
            entries.extend(base / f for f in files if not f.endswith(SKIPPED_SUFFIXES))
    return sorted(entries, key=lambda p: p.relative_to(root).as_posix())


def normalised_mode(path: Path) -> int:
    st = path.lstat()
    if stat.S_ISDIR(st.st_mode) or st.st_mode & stat.S_IXUSR:
        return 0o755
    return 0o644


def digest(root: Path, entries: list[Path], mtime: int, level: int) -> str:
    h = hashlib.sha256(f"v2 mtime={mtime} level={level}\n".encode())
    for p in entries:
        rel = p.relative_to(root).as_posix()
        h.update(f"{rel}\0{normalised_mode(p):o}\0".encode())
        if p.is_symlink():
            h.update(b"L" + os.readlink(p).encode())
        elif p.is_file():
            with p.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        h.update(b"\n")
    return h.hexdigest()


def pack(root: Path, entries: list[Path], out: Path, mtime: int, level: int) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=out.name + ".", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with (
            tmp.open("wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=level) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for p in entries:
                info = tar.gettarinfo(str(p), arcname=p.relative_to(root).as_posix())
                info.mtime = mtime
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mode = normalised_mode(p)
                info.pax_headers = {}
                if info.isfile():
                    with p.open("rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
        tmp.chmod(0o644)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, type=Path, help="folder the ITEMs are relative to")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--mtime", type=int, default=315532800, help="every entry's time (default 1980-01-01)")
    ap.add_argument("--level", type=int, default=9, choices=range(1, 10), help="gzip level (default 9)")
    ap.add_argument("items", nargs="+", metavar="ITEM")
    args = ap.parse_args()

    root = args.root.resolve()
    missing = [item for item in args.items if not (root / item).exists()]
    if missing:
        print(f"not found in {root}: {', '.join(missing)}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = out.with_name(out.name + ".inputs")

    entries = walk(root, args.items)
    want = digest(root, entries, args.mtime, args.level)
    if out.exists() and stamp.exists() and stamp.read_text().strip() == want:
        print("unchanged")
        return 0
    pack(root, entries, out, args.mtime, args.level)
    stamp.write_text(want + "\n")
    print("changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
