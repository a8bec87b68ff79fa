"""The docs deploy: which ref deploys what, and a real run of mike on a scratch repository."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import deploy_docs
import pytest

HOOKS = Path(__file__).resolve().parents[1] / "hooks"


@pytest.mark.parametrize(
    ("ref_type", "ref_name", "expected"),
    [
        ("branch", "main", deploy_docs.Plan("dev", "dev (main)")),
        ("tag", "v0.1.0", deploy_docs.Plan("0.1", "0.1", ("latest",), release=True)),
        ("tag", "v0.2.3", deploy_docs.Plan("0.2", "0.2", ("latest",), release=True)),
        ("tag", "v0.2.0rc1", deploy_docs.Plan("0.2", "0.2 (pre-release)", release=True)),
    ],
)
def test_plan(ref_type: str, ref_name: str, expected: deploy_docs.Plan) -> None:
    assert deploy_docs.plan(ref_type, ref_name) == expected


@pytest.mark.parametrize(("ref_type", "ref_name"), [("branch", "feature"), ("tag", "0.1.0")])
def test_other_refs_are_refused(ref_type: str, ref_name: str) -> None:
    with pytest.raises(SystemExit, match=r"vMAJOR\.MINOR\.PATCH"):
        deploy_docs.plan(ref_type, ref_name)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{name}_NAME", "Docs Test")
        monkeypatch.setenv(f"GIT_{name}_EMAIL", "docs@example.test")
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "index.md").write_text("# Home\n")
    (root / "spec" / "schemas").mkdir(parents=True)
    (root / "spec" / "VERSION").write_text("0.3.1\n")
    (root / "spec" / "spec.md").write_text("# Spec\n")
    schema = {"$id": "https://docs.example.test/spec/0.3/schemas/job.schema.json"}
    (root / "spec" / "schemas" / "job.schema.json").write_text(json.dumps(schema))
    (root / "mkdocs.yml").write_text(
        "site_name: Test\nsite_url: https://docs.example.test/\n"
        f"hooks:\n  - {HOOKS / 'spec_files.py'}\n"
    )
    _git(root, "init", "--quiet", "--initial-branch", "main")
    _git(root, "add", "--all")
    _git(root, "commit", "--quiet", "-m", "init")
    origin = tmp_path / "origin.git"
    _git(tmp_path, "init", "--quiet", "--bare", str(origin))
    _git(root, "remote", "add", "origin", str(origin))
    return root


def test_a_release_and_main_deploy_side_by_side(repo: Path) -> None:
    config = repo / "mkdocs.yml"
    deploy_docs.deploy(deploy_docs.plan("tag", "v0.3.1"), config, push=False)
    assert "0.3/index.html" in _git(repo, "ls-tree", "-r", "--name-only", "gh-pages")
    remote = _git(repo.parent / "origin.git", "branch", "--list")
    assert "gh-pages" not in remote  # pushed only when asked

    deploy_docs.deploy(deploy_docs.plan("branch", "main"), config, push=True)
    files = set(
        _git(repo.parent / "origin.git", "ls-tree", "-r", "--name-only", "gh-pages").split()
    )
    assert {"0.3/index.html", "dev/index.html", "latest/index.html"} <= files
    assert "spec/0.3/schemas/job.schema.json" in files  # where its $id points
    assert "spec/0.3/spec.md" in files
    assert {".nojekyll", "CNAME"} <= files
    assert _git(repo, "show", "origin/gh-pages:CNAME") == "docs.example.test\n"
    versions = json.loads(_git(repo, "show", "origin/gh-pages:versions.json"))
    assert {v["version"]: v["aliases"] for v in versions} == {"0.3": ["latest"], "dev": []}
    # main is not a release: it does not publish root spec files of its own
    assert not any(name.startswith("spec/") and "/0.3/" not in name for name in files)


def test_spec_files_of_an_earlier_commit_are_published_at_their_ids(repo: Path) -> None:
    old_schema = (repo / "spec" / "schemas" / "job.schema.json").read_text()
    # The spec moves on to 0.4; the 0.3 files must still be publishable from history.
    (repo / "spec" / "VERSION").write_text("0.4.0\n")
    new_id = {"$id": "https://docs.example.test/spec/0.4/schemas/job.schema.json"}
    (repo / "spec" / "schemas" / "job.schema.json").write_text(json.dumps(new_id))
    _git(repo, "commit", "--quiet", "--all", "-m", "spec 0.4")
    empty_tree = _git(repo, "hash-object", "-t", "tree", "/dev/null").strip()
    pages = _git(repo, "commit-tree", empty_tree, "-m", "pages").strip()
    _git(repo, "branch", "gh-pages", pages)

    deploy_docs.publish_spec_from("HEAD~1", repo / "mkdocs.yml", push=True)

    origin = repo.parent / "origin.git"
    files = set(_git(origin, "ls-tree", "-r", "--name-only", "gh-pages").split())
    assert files == {"spec/0.3/schemas/job.schema.json", "spec/0.3/spec.md", "spec/0.3/VERSION"}
    assert _git(origin, "show", "gh-pages:spec/0.3/schemas/job.schema.json") == old_schema


def test_publishing_spec_files_needs_a_deployed_site(repo: Path) -> None:
    with pytest.raises(SystemExit, match="deploy the docs once first"):
        deploy_docs.publish_spec_from("HEAD", repo / "mkdocs.yml", push=False)
