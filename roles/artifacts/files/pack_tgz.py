#!/usr/bin/env python3
"""Pack a staged distribution folder into a reproducible .tgz.

The same folder content always gives a byte-identical tarball (sorted entries, fixed
mtime, root:root owner, normalised modes, gzip header without time or name), so its
SHA-256 can be recorded once and checked on every host.

A stamp file (<out>.inputs) holds a digest of the staged content: when it matches and
the tarball exists nothing is written and the script prints "unchanged", otherwise it
prints "changed" (Ansible's changed_when reads this).

Usage: pack_tgz.py --stage DIR --out FILE.tgz [--mtime EPOCH]
The tarball's top folder is the stage folder's own name.
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


def walk(stage: Path) -> list[Path]:
    """Every entry under stage (folders and files), sorted, stage itself first."""
    entries = [stage]
    for root, dirs, files in os.walk(stage):
        dirs.sort()
        base = Path(root)
        entries.extend(base / d for d in dirs)
        entries.extend(base / f for f in sorted(files))
    return sorted(entries, key=lambda p: p.relative_to(stage.parent).as_posix())


def normalised_mode(path: Path) -> int:
    st = path.lstat()
    if stat.S_ISDIR(st.st_mode) or st.st_mode & stat.S_IXUSR:
        return 0o755
    return 0o644


def digest(stage: Path, entries: list[Path], mtime: int) -> str:
    h = hashlib.sha256(f"v1 mtime={mtime}\n".encode())
    for p in entries:
        rel = p.relative_to(stage.parent).as_posix()
        h.update(f"{rel}\0{normalised_mode(p):o}\0".encode())
        if p.is_symlink():
            h.update(b"L" + os.readlink(p).encode())
        elif p.is_file():
            with p.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        h.update(b"\n")
    return h.hexdigest()


def pack(stage: Path, entries: list[Path], out: Path, mtime: int) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=out.name + ".", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with (
            tmp.open("wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for p in entries:
                info = tar.gettarinfo(str(p), arcname=p.relative_to(stage.parent).as_posix())
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
    ap.add_argument("--stage", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--mtime", type=int, default=315532800)
    args = ap.parse_args()

    stage = args.stage.resolve()
    if not stage.is_dir():
        print(f"stage folder {stage} does not exist", file=sys.stderr)
        return 2
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = out.with_name(out.name + ".inputs")

    entries = walk(stage)
    want = digest(stage, entries, args.mtime)
    if out.exists() and stamp.exists() and stamp.read_text().strip() == want:
        print("unchanged")
        return 0
    pack(stage, entries, out, args.mtime)
    stamp.write_text(want + "\n")
    print("changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
