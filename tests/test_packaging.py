"""Set-up files agree with each other: pyproject vs environment.yml, CI runs the README command."""

import os
import re
import tomllib

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONDA_TO_PYPI = {"pytorch": "torch"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = _pyproject()
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    pyproject = {_name(r) for r in reqs}
    env = yaml.safe_load(open(os.path.join(ROOT, "environment.yml")))
    conda = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            conda |= {_name(p) for p in dep["pip"] if not p.startswith("-e")}
        else:
            conda.add(CONDA_TO_PYPI.get(_name(dep), _name(dep)))
    conda -= {"python", "pip"}
    assert conda == pyproject, (sorted(conda - pyproject), sorted(pyproject - conda))


def test_torch_ranges_admit_the_machine_versions():
    deps = {_name(r): r for r in _pyproject()["dependencies"]}
    from packaging.specifiers import SpecifierSet

    assert "2.14.1" in SpecifierSet(deps["torch"][len("torch"):])
    assert "0.29.1" in SpecifierSet(deps["torchvision"][len("torchvision"):])


def test_ci_runs_the_readme_test_command():
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert re.search(r"^make test$", ci, re.M)
    assert "make test" in readme and "make demo" in readme
