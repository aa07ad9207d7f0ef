"""Shared fixtures: the runtime's seeded blobs, an optional trained blob, and the `otkd` binary.

- ``OTKD_BIN``: the otkd binary (default: ``target/release/otkd``, then ``target/debug/otkd``
  under ``CARGO_TARGET_DIR`` or the workspace's ``target``). Without it the comparisons with the
  Rust side are skipped, unless ``OTKD_REQUIRE_BIN=1`` (CI), which makes them fail.
- ``OTKD_TRAINED_BLOB``: a blob from ``otkd export`` of a trained run, compared with the Rust side
  too (optional).
"""

import os
import shutil
from pathlib import Path

import pytest

import otkd

ROOT = Path(__file__).resolve().parents[2]


def _find_binary():
    if os.environ.get("OTKD_BIN"):
        return Path(os.environ["OTKD_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for profile in ("release", "debug"):
        candidate = target / profile / "otkd"
        if candidate.is_file():
            return candidate
    found = shutil.which("otkd")
    return Path(found) if found else None


@pytest.fixture(scope="session")
def otkd_bin():
    path = _find_binary()
    if path is None or not path.is_file():
        if os.environ.get("OTKD_REQUIRE_BIN") == "1":
            pytest.fail("OTKD_REQUIRE_BIN=1 but no otkd binary (set OTKD_BIN or build -p otkd-host)")
        pytest.skip("no otkd binary: build it with `cargo build --release -p otkd-host` or set OTKD_BIN")
    return path


@pytest.fixture(scope="session")
def blob_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("blobs")
    for name in ("tiny", "micro", "minimal"):
        (d / f"{name}.otkd").write_bytes(otkd.seeded_blob(name))
    trained = os.environ.get("OTKD_TRAINED_BLOB")
    if trained:
        shutil.copyfile(trained, d / "trained.otkd")
    return d


def blob_names():
    names = ["tiny", "micro"]
    if os.environ.get("OTKD_TRAINED_BLOB"):
        names.append("trained")
    return names


@pytest.fixture(params=blob_names())
def blob_path(request, blob_dir):
    return blob_dir / f"{request.param}.otkd"


@pytest.fixture(scope="session")
def tiny():
    return otkd.Model.load(otkd.seeded_blob("tiny"))
