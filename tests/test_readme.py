"""The README quotes committed result files, never memory: each generated table must match its file."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_evidence_table_is_generated_from_the_committed_result():
    from simlab.report import evidence_markdown
    res = json.loads((ROOT / "bench" / "evidence.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert evidence_markdown(res) in readme, "regenerate the README table from bench/evidence.json"
    # the prose quotes the same file
    p = res["dense_evidence"]["predictions"]
    for value in (p["decoder"]["all"]["loss"], p["position mean, loss-optimal (content-blind)"]["all"]["loss"],
                  res["floors"]["position only"]["fg_bg_miou"]):
        assert f"{value:.3f}" in readme
    assert (ROOT / "bench" / "evidence.png").stat().st_size > 20_000


def test_id_baseline_table_is_generated_from_the_committed_result():
    from simlab.report import id_baseline_markdown
    res = json.loads((ROOT / "bench" / "id_baseline.json").read_text())
    assert id_baseline_markdown(res) in (ROOT / "README.md").read_text()
