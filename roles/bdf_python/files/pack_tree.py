#!/usr/bin/env python3
"""Pack folders and files into a reproducible .tgz for the hosts (one copy, one unpack).

The same content always gives the same bytes (sorted entries, fixed times, root owner,
normalised modes, no gzip timestamp), so Ansible's copy reports a change only when the
content changed. Byte-code caches are left out. Prints "changed" or "unchanged".

Usage: pack_tree.py --root DIR --out FILE.tgz ITEM [ITEM ...]   (ITEMs relative to DIR)
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import sys
import tarfile
from pathlib import Path

SKIPPED_DIRS = {"__pycache__"}
SKIPPED_SUFFIXES = (".pyc", ".pyo")
FIXED_MTIME = 315532800  # 1980-01-01


def entries(root: Path, items: list[str]) -> list[Path]:
    found: list[Path] = []
    for item in items:
        path = root / item
        if path.is_dir():
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
                found.append(Path(folder))
                found.extend(Path(folder) / f for f in sorted(files) if not f.endswith(SKIPPED_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise SystemExit(f"{path} does not exist")
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def pack(root: Path, paths: list[Path]) -> bytes:
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in paths:
            info = tar.gettarinfo(str(path), arcname=path.relative_to(root).as_posix())
            info.mtime = FIXED_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644
            info.pax_headers = {}
            if info.isfile():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return raw.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("items", nargs="+")
    args = parser.parse_args()
    data = pack(args.root.resolve(), entries(args.root.resolve(), args.items))
    if args.out.exists() and args.out.read_bytes() == data:
        print("unchanged")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(args.out)
    print("changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
