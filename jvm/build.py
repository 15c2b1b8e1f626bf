"""Build the job's JVM jar: the profile contract validator (``jvm/src``) compiled against
pyspark's own jars, with ``jobs.contract``'s declaration embedded as ``contract.json``.

    python jvm/build.py --output .artifacts/jvm/bigdataflow-jvm.jar

Reproducible (fixed zip timestamps, sorted entries); prints ``changed`` or ``unchanged``
(a digest of the sources, the contract and javac's version is kept beside the jar), so
``make`` and the artifacts role rebuild only when an input changed. Needs a JDK (javac).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pyspark

from jobs.contract import contract_json

SOURCES = Path(__file__).resolve().parent / "src"
CONTRACT_ENTRY = "org/bigdataflow/contract/contract.json"
JAVA_RELEASE = "17"
ZIP_TIME = (2026, 1, 1, 0, 0, 0)


def _javac() -> str:
    javac = shutil.which("javac") or (Path(os.environ.get("JAVA_HOME", "/nonexistent")) / "bin" / "javac")
    if not Path(javac).exists():
        sys.exit(
            "jvm/build.py: javac not found: install a JDK (Debian: apt-get install openjdk-17-jdk-headless)"
        )
    return str(javac)


def _inputs_digest(javac: str, sources: list[Path]) -> str:
    digest = hashlib.sha256()
    version = subprocess.run([javac, "-version"], capture_output=True, text=True, check=True)  # noqa: S603
    digest.update((version.stdout + version.stderr).encode())
    digest.update(pyspark.__version__.encode())
    digest.update(contract_json().encode())
    for source in sources:
        digest.update(str(source.relative_to(SOURCES)).encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _entry(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def build(output: Path) -> bool:
    """Build ``output`` unless its inputs are unchanged; True when it was (re)built."""
    javac = _javac()
    sources = sorted(SOURCES.rglob("*.java"))
    stamp = output.with_name(output.name + ".inputs")
    digest = _inputs_digest(javac, sources)
    if output.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return False
    classpath = str(Path(pyspark.__file__).parent / "jars" / "*")
    with tempfile.TemporaryDirectory() as classes:
        compile_all = [javac, "--release", JAVA_RELEASE, "-nowarn", "-cp", classpath, "-d", classes]
        subprocess.run([*compile_all, *map(str, sources)], check=True)  # noqa: S603 - our own sources
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".tmp")
        with zipfile.ZipFile(partial, "w") as archive:
            _entry(archive, "META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\r\n\r\n")
            for path in sorted(Path(classes).rglob("*.class")):
                _entry(archive, path.relative_to(classes).as_posix(), path.read_bytes())
            _entry(archive, CONTRACT_ENTRY, contract_json().encode())
        partial.replace(output)
    stamp.write_text(digest + "\n")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="the jar to write")
    args = parser.parse_args()
    print("changed" if build(args.output) else "unchanged")


if __name__ == "__main__":
    main()
