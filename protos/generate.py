"""Regenerate the wire code: Python messages, gRPC stubs and mypy stubs from the .proto sources.

Reads ``protos/taskmesh/v1/*.proto`` and writes ``taskmesh/common/rpc/{name}_pb2.py(i)`` and
``{name}_pb2_grpc.py(i)`` (flat, one module per .proto). protoc names the modules after the
proto package (``from taskmesh.v1 import task_pb2``); the imports are rewritten to the Python
package that holds them. The output is committed and must not drift from the sources:
``tests/unit/test_protos.py`` regenerates into a temporary directory and compares.

Run with the project's virtualenv: ``make protos`` (or ``.venv/bin/python protos/generate.py``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PROTO_PACKAGE_DIR = Path("taskmesh", "v1")
PYTHON_PACKAGE = "taskmesh.common.rpc"
DEFAULT_OUT = PROTO_ROOT.parent / "taskmesh" / "common" / "rpc"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")

# protoc and mypy-protobuf name modules after the proto package; the code lives elsewhere.
IMPORT_FIXES = (
    (re.compile(r"\bfrom taskmesh\.v1 import\b"), f"from {PYTHON_PACKAGE} import"),
    (re.compile(r"\btaskmesh\.v1\.(\w+_pb2(?:_grpc)?)\b"), rf"{PYTHON_PACKAGE}.\1"),
    (
        re.compile(r"\btaskmesh/v1/(\w+_pb2(?:_grpc)?\.py)\b"),
        rf"{PYTHON_PACKAGE.replace('.', '/')}/\1",
    ),
)
SERVICE_RE = re.compile(r"^\s*service\s+\w+", re.MULTILINE)


def is_generated(path: Path) -> bool:
    """True for a file this script writes (and may therefore replace or delete)."""
    return path.name.endswith(GENERATED_SUFFIXES)


def proto_sources() -> list[Path]:
    """The .proto files to compile, relative to PROTO_ROOT, in a stable order."""
    return sorted(
        p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / PROTO_PACKAGE_DIR).glob("*.proto")
    )


def run_protoc(sources: Sequence[Path], dest: Path) -> None:
    """Compile ``sources`` into ``dest`` with the Python, gRPC and mypy-protobuf generators."""
    bin_dir = Path(sys.executable).parent  # the venv's bin, where mypy-protobuf's plugins live
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",  # adds the well-known types (google/protobuf/*.proto) to the path
        "--proto_path=.",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={dest}",
        f"--grpc_python_out={dest}",
        f"--mypy_out=quiet:{dest}",
        f"--mypy_grpc_out=quiet:{dest}",
        *(p.as_posix() for p in sources),
    ]
    subprocess.run(command, cwd=PROTO_ROOT, check=True)


def fix_imports(text: str) -> str:
    """Point protoc's ``taskmesh.v1`` module references at the package that holds the code."""
    for pattern, replacement in IMPORT_FIXES:
        text = pattern.sub(replacement, text)
    return text


def expected_outputs(sources: Sequence[Path]) -> list[str]:
    """Names of the files to keep: messages for every source, gRPC code where it has a service."""
    names = []
    for source in sources:
        stem = source.stem
        names += [f"{stem}_pb2.py", f"{stem}_pb2.pyi"]
        if SERVICE_RE.search((PROTO_ROOT / source).read_text(encoding="utf-8")):
            names += [f"{stem}_pb2_grpc.py", f"{stem}_pb2_grpc.pyi"]
    return sorted(names)


def generate(out: Path) -> list[Path]:
    """Regenerate every generated file in ``out``; remove stale ones. Returns the files kept."""
    sources = proto_sources()
    if not sources:
        raise SystemExit(f"no .proto files under {PROTO_ROOT / PROTO_PACKAGE_DIR}")
    names = expected_outputs(sources)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="taskmesh-protos-") as tmp:
        run_protoc(sources, Path(tmp))
        produced = Path(tmp) / PROTO_PACKAGE_DIR
        contents = {
            name: fix_imports((produced / name).read_text(encoding="utf-8")) for name in names
        }
    for stale in sorted(p for p in out.iterdir() if is_generated(p) and p.name not in contents):
        stale.unlink()
    for name, text in contents.items():
        target = out / name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8", newline="\n")
    return [out / name for name in names]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="Regenerate taskmesh's protobuf and gRPC code.")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"directory to write the generated modules to (default: {DEFAULT_OUT})",
    )
    args = parser.parse_args(argv)
    written = generate(args.out)
    print(f"generated {len(written)} files in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
