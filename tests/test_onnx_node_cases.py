"""The ONNX backend node test cases, compiled by edgesparse for x86_64 and run by the native runner.

    edgesparse compile <case>/model.onnx --target x86_64 -o out && out/runner run inputs... outputs...

One test per case whose nodes are all in SUPPORTED_OPS, named by the case. Every output is compared with the
case's expected output: floats within 1e-4 * max(1, max|expected|) (NaNs at the same places), integers and
bools exactly. A case edgesparse refuses with a clear EdgesparseError at compile time is skipped with that
message as the reason; anything else that goes wrong (a crash, a runner failure, a wrong value) fails.
Shape-parameter inputs are bound as initializers first; see tests/onnx_node_cases.py for why.
"""

from __future__ import annotations

import shutil
import tempfile

import pytest

import onnx_node_cases as node_cases

CASE_NAMES = node_cases.supported_case_names()


@pytest.fixture(scope="module", autouse=True)
def private_dirs(tmp_path_factory):
    """The cache and every temporary file of this module go under pytest's tmp_path, never the user's."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("onnx-node-cases")
        (root / "cache").mkdir()
        (root / "tmp").mkdir()
        mp.setenv("EDGESPARSE_CACHE", str(root / "cache"))
        mp.setenv("TMPDIR", str(root / "tmp"))
        mp.setattr(tempfile, "tempdir", str(root / "tmp"))
        yield root


def test_cases_were_collected():
    assert len(CASE_NAMES) > 300, f"only {len(CASE_NAMES)} ONNX node cases use supported ops"


@pytest.mark.parametrize("name", CASE_NAMES)
def test_node_case(name, tmp_path):
    case = node_cases.all_node_cases()[name]
    try:
        problems = node_cases.check_case(case, tmp_path)
    except node_cases.Refused as refusal:
        pytest.skip(f"refused: {refusal}")
    finally:
        shutil.rmtree(tmp_path / "artifact", ignore_errors=True)  # 690 runners would fill pytest's tmp
    assert not problems, f"{name} ({', '.join(sorted(case.ops))}): " + "; ".join(problems)
