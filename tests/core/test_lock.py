"""requirements.lock, which `make install` installs with --require-hashes, agrees with pyproject.toml: every
requirement pyproject.toml declares (the dependencies, the test extra, the install group, the build backend) is
pinned there at a version its specifier allows, with its extras' packages, and every pin carries hashes.
`make lock` rewrites the lock when this fails."""

import importlib.metadata
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def locked(name: str = "requirements.lock") -> dict[str, tuple[Requirement, list[str]]]:
    """The lock's pins by canonical name: the pinned requirement (`name==version ; marker`) and its hashes.

    Shape of an entry, as `uv pip compile --generate-hashes` writes it:
        name==1.2.3 ; marker \\
            --hash=sha256:... \\
            --hash=sha256:...
            # via ...
    """
    pins: dict[str, tuple[Requirement, list[str]]] = {}
    current = None
    for line in (ROOT / name).read_text().splitlines():
        text = line.strip().rstrip("\\").strip()
        if not text or text.startswith("#"):
            continue
        if line[0].isspace():
            if current and text.startswith("--hash="):
                pins[current][1].append(text.removeprefix("--hash="))
            continue
        requirement = Requirement(text)
        current = canonicalize_name(requirement.name)
        pins[current] = (requirement, [])
    return pins


def declared() -> list[tuple[str, Requirement]]:
    """Every requirement pyproject.toml declares, with where: (section, requirement)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    sections = {
        "project.dependencies": pyproject["project"]["dependencies"],
        "project.optional-dependencies.test": pyproject["project"]["optional-dependencies"]["test"],
        "dependency-groups.install": pyproject["dependency-groups"]["install"],
        "build-system.requires": pyproject["build-system"]["requires"],
    }
    return [(section, Requirement(text)) for section, texts in sections.items() for text in texts]


def test_every_declared_requirement_is_locked_at_a_version_it_allows():
    pins = locked()
    wrong = []
    for section, requirement in declared():
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None:
            wrong.append(f"{section}: {requirement} is not in the lock")
            continue
        (exact,) = pin[0].specifier
        if not requirement.specifier.contains(exact.version, prereleases=True):
            wrong.append(f"{section}: {requirement}, but the lock pins {pin[0]}")
    assert not wrong, "requirements.lock disagrees with pyproject.toml (run `make lock`):\n" + "\n".join(wrong)


def test_the_packages_of_every_declared_extra_are_locked():
    # The lock names celery, not celery[redis]: pip installs what an extra adds only because the lock pins it.
    # Extras bring extras (celery[redis] needs kombu[redis], which needs redis). What each adds is read from the
    # installed distribution's metadata (make install installs the locked versions).
    pins = locked()
    missing = []
    todo = [(section, requirement.name, extra) for section, requirement in declared() for extra in requirement.extras]
    seen = set()
    while todo:
        section, name, extra = todo.pop()
        if (canonicalize_name(name), extra) in seen:
            continue
        seen.add((canonicalize_name(name), extra))
        for text in importlib.metadata.requires(name) or []:
            needed = Requirement(text)
            if needed.marker is None or not needed.marker.evaluate({"extra": extra}):
                continue
            if needed.marker.evaluate({"extra": ""}):
                continue  # not the extra's: a plain dependency, which pip asks the lock for anyway
            if canonicalize_name(needed.name) not in pins:
                missing.append(f"{section}: {name}[{extra}] needs {needed.name}")
            todo.extend((section, needed.name, nested) for nested in needed.extras)
    assert not missing, "requirements.lock misses what extras add (run `make lock`):\n" + "\n".join(missing)


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements.txt"])
def test_every_pin_is_exact_and_carries_hashes(lock):
    for name, (requirement, hashes) in locked(lock).items():
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{name}: {requirement}"
        assert hashes and all(h.startswith("sha256:") for h in hashes), f"{name} has no sha256 hashes"


def test_the_deploy_pins_are_the_dependencies_at_the_locked_versions_without_the_test_tools():
    # requirements.txt, which a buildpack installs, is requirements.lock less what only tests and `make` need.
    full, deploy = locked(), locked("requirements.txt")
    differ = [
        f"{name}: {pin[0]} here, {full[name][0]} in requirements.lock"
        for name, pin in deploy.items()
        if name not in full or str(pin[0].specifier) != str(full[name][0].specifier)
    ]
    assert not differ, "requirements.txt disagrees with requirements.lock (run `make lock`):\n" + "\n".join(differ)
    needed = [r for section, r in declared() if section == "project.dependencies"]
    assert [str(r) for r in needed if canonicalize_name(r.name) not in deploy] == []
    assert "pytest" not in deploy and "playwright" not in deploy
