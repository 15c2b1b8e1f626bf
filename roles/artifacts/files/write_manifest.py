#!/usr/bin/env python3
"""Record the SHA-256 of every prepared artifact, and check them against a lock file.

Reads a JSON list of entries {name, version, kind: file|dir, path, source, strict,
non_strict_prefixes (dir: names of files compiled here)}
(written by the role), and writes into the cache folder:
  manifest.json  - per artifact: version, source, path (relative to the cache), size,
                   sha256; for a folder of jars or wheels the same for each file in it;
  SHA256SUMS     - every file, in `sha256sum -c` format (paths relative to the cache);
  <folder>/SHA256SUMS for each folder artifact (relative to that folder).
Files are only rewritten when their content changes; the script prints "changed" or
"unchanged" on its last line (Ansible's changed_when reads it).

Lock file (committed in the repository): {"artifacts": {relative path: {"sha256",
"strict"}}}. --lock-mode verify: an artifact whose SHA-256 differs from the lock fails
the run when the lock marks it strict (bits fetched from a registry or assembled
reproducibly from them), and is reported as a warning otherwise (bits compiled here,
which depend on the local toolchain). --lock-mode update rewrites the lock.

Usage: write_manifest.py --cache DIR --entries FILE.json [--lock FILE --lock-mode verify|update|off]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def rel(path: Path, cache: Path) -> str:
    try:
        return path.relative_to(cache).as_posix()
    except ValueError:
        return path.as_posix()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True, type=Path)
    ap.add_argument("--entries", required=True, type=Path)
    ap.add_argument("--lock", type=Path)
    ap.add_argument("--lock-mode", choices=["verify", "update", "off"], default="verify")
    args = ap.parse_args()

    cache = args.cache.resolve()
    entries = json.loads(args.entries.read_text())
    changed = False
    manifest: dict[str, dict] = {}
    all_sums: list[tuple[str, str]] = []
    strict: dict[str, bool] = {}

    for entry in sorted(entries, key=lambda e: e["name"]):
        path = Path(entry["path"]).resolve()
        item = {
            "version": entry["version"],
            "source": entry["source"],
            "kind": entry["kind"],
            "path": rel(path, cache),
        }
        if entry["kind"] == "file":
            if not path.is_file():
                print(f"artifact {entry['name']}: {path} is missing", file=sys.stderr)
                return 1
            item["size"] = path.stat().st_size
            item["sha256"] = sha256(path)
            item["strict"] = bool(entry.get("strict", True))
            all_sums.append((item["sha256"], item["path"]))
            strict[item["path"]] = item["strict"]
        else:
            if not path.is_dir():
                print(f"artifact {entry['name']}: folder {path} is missing", file=sys.stderr)
                return 1
            files = {}
            for f in sorted(p for p in path.iterdir() if p.is_file() and p.name != "SHA256SUMS"):
                files[f.name] = {
                    "size": f.stat().st_size,
                    "sha256": sha256(f),
                    "strict": not f.name.startswith(tuple(entry.get("non_strict_prefixes", []))),
                }
                all_sums.append((files[f.name]["sha256"], rel(f, cache)))
                strict[rel(f, cache)] = files[f.name]["strict"]
            item["files"] = files
            sums = "".join(f"{v['sha256']}  {k}\n" for k, v in files.items())
            changed |= write_if_changed(path / "SHA256SUMS", sums)
        manifest[entry["name"]] = item

    # Keep what earlier runs recorded for components not prepared this time.
    manifest_file = cache / "manifest.json"
    if manifest_file.exists():
        for name, item in json.loads(manifest_file.read_text()).get("artifacts", {}).items():
            if name in manifest or not (cache / item["path"]).exists():
                continue
            manifest[name] = item
            if item["kind"] == "file":
                all_sums.append((item["sha256"], item["path"]))
                strict[item["path"]] = item.get("strict", True)
            else:
                for f, v in item["files"].items():
                    all_sums.append((v["sha256"], f"{item['path']}/{f}"))
                    strict[f"{item['path']}/{f}"] = v.get("strict", True)

    changed |= write_if_changed(
        manifest_file, json.dumps({"artifacts": manifest}, indent=2, sort_keys=True) + "\n"
    )
    changed |= write_if_changed(
        cache / "SHA256SUMS", "".join(f"{s}  {p}\n" for s, p in sorted(all_sums, key=lambda x: x[1]))
    )

    if args.lock and args.lock_mode == "update":
        lock = {
            "comment": "SHA-256 of every artifact the artifacts role prepares; "
            "strict=false: compiled on the control node, depends on its toolchain.",
            "artifacts": {
                p: {"sha256": s, "strict": strict[p]} for s, p in sorted(all_sums, key=lambda x: x[1])
            },
        }
        if write_if_changed(args.lock, json.dumps(lock, indent=2, sort_keys=True) + "\n"):
            print(f"lock file {args.lock} updated")
            changed = True
    elif args.lock and args.lock_mode == "verify" and args.lock.exists():
        locked = json.loads(args.lock.read_text()).get("artifacts", {})
        failures = []
        for s, p in all_sums:
            want = locked.get(p)
            if want is None:
                print(
                    f"WARNING: {p} is not in the lock file {args.lock} (run with artifacts_lock_mode=update)"
                )
            elif want["sha256"] != s:
                msg = f"{p}: SHA-256 {s} differs from the lock file's {want['sha256']}"
                if want.get("strict", True):
                    failures.append(msg)
                else:
                    print(f"WARNING: {msg} (built locally; depends on the toolchain)")
        if failures:
            print("\n".join(failures), file=sys.stderr)
            print(
                f"Artifacts differ from {args.lock}: check where they came from, then run with "
                "artifacts_lock_mode=update if the change is intended.",
                file=sys.stderr,
            )
            return 1

    print("changed" if changed else "unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
