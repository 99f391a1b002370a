"""The compatibility matrix: each framework adapter's tests on the oldest and the newest releases its extra allows.

nox and uv come with the dev extra (``pip install -e ".[all,dev]"``); CI runs every session after the tests::

    .venv/bin/nox -l                                                    # the sixteen sessions
    .venv/bin/nox -s "adapters(framework='crewai', versions='oldest')"  # one of them
    .venv/bin/nox -t oldest                                             # every framework at its oldest (or -t crewai)
    .venv/bin/nox -- -x -k trip                                         # arguments after -- go to pytest

Each session makes its own virtual environment with uv, installs ``-e ".[<extra>,dev]"`` and runs that
adapter's tests (and any other test that imports the adapter or its framework). ``newest`` lets the resolver
pick the newest releases. ``oldest`` pins each framework requirement of the extra to its lower bound, read from
pyproject.toml (``crewai>=1.15.29`` runs on crewai==1.15.29), and each package the adapter imports besides
them (langchain-core under langchain, say) to the oldest release those pins allow, found with uv's
``lowest-direct`` resolution. Everything else resolves to its newest release, as for a user installing the
extra today. A lower bound that cannot be installed, or that the adapter does not import on, fails the session.

What was verified, and why the bounds are where they are: docs/compatibility.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nox
from packaging.requirements import Requirement

nox.needs_version = ">=2024.4.15"
nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "no"  # uv builds a fresh environment from its cache in seconds

ROOT = Path(__file__).resolve().parent
PROJECT = "loopguard-core"


@dataclass(frozen=True)
class Framework:
    extra: str  # the extra in pyproject.toml that enables the adapter
    adapter: str  # the adapter's import name
    also_imports: tuple[str, ...]  # distributions the adapter imports besides the extra's own requirements
    tests: tuple[str, ...]  # every test that imports the adapter or its framework
    also_shows: tuple[str, ...] = ()  # distributions printed with the versions under test when installed, not pinned
    env: tuple[tuple[str, str], ...] = ()  # environment of the import check and the tests


FRAMEWORKS = {
    "langchain": Framework(
        extra="langchain",
        adapter="loopguard_langchain",
        also_imports=("langchain-core", "langgraph"),  # langchain_core.*, langgraph.errors (create_agent's runtime)
        tests=("tests/integrations/langchain",),
    ),
    "langgraph": Framework(
        extra="langgraph",
        adapter="loopguard_langgraph",
        also_imports=("langchain-core", "langgraph-prebuilt"),  # langchain_core.*, langgraph.prebuilt.ToolNode
        tests=("tests/integrations/langgraph",),
    ),
    "crewai": Framework(
        extra="crewai",
        adapter="loopguard_crewai",
        also_imports=(),  # crewai pins crewai-core to its own version
        tests=("tests/integrations/crewai",),
    ),
    "pydantic-ai": Framework(
        extra="pydantic-ai",
        adapter="loopguard_pydantic_ai",
        also_imports=(),  # pydantic-ai-slim pins pydantic-graph to its own version
        tests=("tests/integrations/pydantic_ai",),
    ),
    "anthropic": Framework(
        extra="anthropic",
        adapter="loopguard_anthropic",
        also_imports=("httpx2",),  # the SDK's HTTP client: the demo and the tutorial test build on it
        tests=("tests/integrations/anthropic", "tests/tutorial/test_agent_loop_anthropic.py"),
    ),
    "openai": Framework(
        extra="openai",
        adapter="loopguard_openai",
        # The guarded transport wraps the SDK's HTTP client with that client's own library: httpx under openai 2.x,
        # httpx2 under 3.x. The SDK's requirement picks it, so it is not pinned here (httpx's lowest, 0.23.0, cannot
        # even be installed beside the httpx2 that genai-prices needs); both are shown when installed.
        also_imports=(),
        also_shows=("httpx", "httpx2"),
        tests=("tests/integrations/openai",),
    ),
    "openai-agents": Framework(
        extra="openai-agents",
        adapter="loopguard_openai_agents",
        also_imports=("openai",),  # the tests drive the Runner through the openai client (agents 0.24 needs openai 3)
        also_shows=("httpx", "httpx2"),
        tests=("tests/integrations/openai_agents",),
    ),
    "litellm": Framework(
        extra="litellm",
        adapter="loopguard_litellm",
        also_imports=("openai",),  # the adapter reuses loopguard_openai's parsing
        also_shows=("httpx", "httpx2"),
        tests=("tests/integrations/litellm",),
        env=(("LITELLM_LOCAL_MODEL_COST_MAP", "True"),),  # no download of LiteLLM's price map (no network in CI)
    ),
}
VERSIONS = ("oldest", "newest")
SHOW_VERSIONS = """
import importlib.metadata as m, sys
shown = []
for name in sys.argv[1:]:  # a name ending in "?" is shown only when installed
    try:
        shown.append(f"{name.rstrip('?')}=={m.version(name.rstrip('?'))}")
    except m.PackageNotFoundError:
        if not name.endswith("?"):
            raise
print("versions under test:", ", ".join(shown))
"""


def framework_requirements(extra: str) -> list[Requirement]:
    """The third-party requirements an extra adds (its own ``loopguard-core[...]`` entries left out)."""
    pyproject = nox.project.load_toml(ROOT / "pyproject.toml")
    extras = pyproject["project"]["optional-dependencies"]
    if extra not in extras:
        raise ValueError(f"pyproject.toml has no extra {extra!r}")
    return [req for req in map(Requirement, extras[extra]) if canonical(req.name) != PROJECT]


def lower_bound(req: Requirement) -> str:
    """The oldest version ``req`` allows: its ``>=`` (or ``==``/``~=``) bound."""
    bounds = [spec.version for spec in req.specifier if spec.operator in (">=", "==", "~=")]
    if len(bounds) != 1:
        raise ValueError(f"{req} needs exactly one lower bound (>=X) for the 'oldest' session to pin")
    return bounds[0]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def oldest_pins(session: nox.Session, framework: Framework) -> list[str]:
    """``name==version`` for each framework requirement's lower bound, plus the oldest release of each package
    the adapter also imports that those pins allow (found by uv's lowest-direct resolution)."""
    pins = [f"{req.name}=={lower_bound(req)}" for req in framework_requirements(framework.extra)]
    if not framework.also_imports:
        return pins
    wanted = Path(session.create_tmp()) / "oldest.in"
    wanted.write_text("\n".join([*pins, *framework.also_imports]) + "\n")
    resolved = session.run(
        "uv",
        "pip",
        "compile",
        str(wanted),
        "--resolution=lowest-direct",
        f"--python={session.virtualenv.location}",  # the session's interpreter and platform
        "--no-header",
        "--no-annotate",
        "--quiet",
        silent=True,
    )
    assert isinstance(resolved, str)
    found = {
        canonical(name): version for name, _, version in (t.partition("==") for t in resolved.split() if "==" in t)
    }
    missing = [name for name in framework.also_imports if canonical(name) not in found]
    if missing:
        raise ValueError(f"{', '.join(missing)} not among the packages {' '.join(pins)} install")
    return pins + [f"{name}=={found[canonical(name)]}" for name in framework.also_imports]


def distributions(framework: Framework) -> list[str]:
    return [req.name for req in framework_requirements(framework.extra)] + list(framework.also_imports)


@nox.session(venv_backend="uv", tags=["matrix"])
@nox.parametrize(
    ("framework", "versions"),
    [(framework, versions) for framework in FRAMEWORKS for versions in VERSIONS],
    tags=[[framework, versions] for framework in FRAMEWORKS for versions in VERSIONS],
)
def adapters(session: nox.Session, framework: str, versions: str) -> None:
    """One framework adapter's tests on the oldest or the newest releases its extra allows."""
    spec = FRAMEWORKS[framework]
    names = distributions(spec)
    if versions == "oldest":
        pins = oldest_pins(session, spec)
        session.log("oldest allowed: " + " ".join(pins))
        session.install("-e", f".[{spec.extra},dev]", *pins)
    else:  # ask the index again for these few, whatever uv's cache remembers of it
        session.install("-e", f".[{spec.extra},dev]", *(f"--refresh-package={name}" for name in names))
    env = dict(spec.env)
    # Fail here, loudly, rather than let the tests' importorskip turn a broken import into skips.
    session.run("python", "-c", f"import {spec.adapter}", env=env)
    session.run("python", "-c", SHOW_VERSIONS, *names, *(f"{name}?" for name in spec.also_shows), log=False)
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", *spec.tests, *session.posargs, env=env)
