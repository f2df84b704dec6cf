import json

import pytest

from lmfix.cli import main
from lmfix.errors import LmfixError
from lmfix.report import write_report
from lmfix.run import run, train_command
from lmfix.train import TrainConfig

TINY = {"emsize": 8, "nhid": 8, "epochs": 1, "batch_size": 4, "bptt": 8, "log_interval": 5}
VARIANTS = ["learned", "learned-untied", "word2vec", "pmi", "random-orthogonal"]


def test_tiny_run_end_to_end_then_resume(tiny_corpus_dir, tmp_path):
    out = tmp_path / "out"
    run_dirs = run("quick", out, str(tiny_corpus_dir), VARIANTS, dict(TINY, max_train_tokens=None),
                   progress=False)
    results = write_report(run_dirs, out)
    for f in ("report.md", "results.csv", "results.json", "index.html", "val_ppl.png",
              "params.png", "run.json"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert (out / "embeddings" / "pmi-d8.bin").is_file()
    names = {r["name"] for r in results["runs"]}
    assert names == set(VARIANTS)
    report = (out / "report.md").read_text()
    assert all(v in report for v in VARIANTS)

    # A crashed variant is redone, finished ones are kept untouched.
    kept = out / "runs" / "learned" / "summary.json"
    mtime = kept.stat().st_mtime_ns
    crashed = out / "runs" / "pmi"
    (crashed / "summary.json").unlink()
    (crashed / "status.json").write_text(json.dumps({"status": "running"}))
    run("quick", out, str(tiny_corpus_dir), VARIANTS, dict(TINY, max_train_tokens=None),
        progress=False)
    assert kept.stat().st_mtime_ns == mtime
    assert json.loads((crashed / "status.json").read_text())["status"] == "finished"


def test_changed_settings_need_force(tiny_corpus_dir, tmp_path):
    out = tmp_path / "out"
    run("quick", out, str(tiny_corpus_dir), ["learned"], dict(TINY, max_train_tokens=None),
        progress=False)
    with pytest.raises(LmfixError, match="other settings"):
        run("quick", out, str(tiny_corpus_dir), ["learned"],
            dict(TINY, max_train_tokens=None, lr=1.0), progress=False)


def test_train_command_reproduces_config():
    cfg = TrainConfig(data="d", embedding="learned", out="o", emsize=64, cosine=True)
    cmd = train_command(cfg)
    assert cmd.startswith("lmfix train --data d --embedding learned --out o")
    assert "--emsize 64" in cmd and "--cosine" in cmd and "--lr" not in cmd


def test_cli_run_bad_variant(tiny_corpus_dir, tmp_path, capsys):
    code = main(["run", "--data", str(tiny_corpus_dir), "--out", str(tmp_path / "o"),
                 "--variants", "learned,nonsense", "--quiet"])
    assert code == 2 and "nonsense" in capsys.readouterr().err
