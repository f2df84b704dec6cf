"""Issue 14: --fix / --learn-top / --delta-rank end to end, the variant syntax, and the
frontier preset's report (frontier.png, the Pareto table), on the tiny corpus."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from lmfix.cli import main
from lmfix.data import load_corpus
from lmfix.embeddings.vectors import Embeddings, save_embeddings
from lmfix.errors import LmfixError
from lmfix.model import normalize_vectors
from lmfix.report import pareto_front, write_report
from lmfix.run import PRESETS, Variant, frontier_variants, parse_variant, run, variant_config
from lmfix.train import TrainConfig, build_model, make_optimizer, train

D = 8
TINY = dict(emsize=D, nhid=D, epochs=1, batch_size=4, bptt=8, lr=5.0, log_interval=5,
            max_train_tokens=400, max_eval_tokens=200)


def lstm_params(d_in: int, h: int, layers: int = 2) -> int:
    return sum(4 * h * ((d_in if l == 0 else h) + h) + 8 * h for l in range(layers))


@pytest.fixture
def vectors_file(tiny_corpus_dir, tmp_path):
    """Random vectors for every word of the tiny corpus, in a word2vec text file."""
    words = load_corpus(str(tiny_corpus_dir)).vocab.words
    rng = np.random.default_rng(0)
    path = tmp_path / "vec.txt"
    save_embeddings(Embeddings(list(words), rng.standard_normal((len(words), D))
                               .astype(np.float32), {}), path)
    return path


def cfg(tiny_corpus_dir, out, **kw) -> TrainConfig:
    return TrainConfig(data=str(tiny_corpus_dir), out=str(out), **{**TINY, **kw})


# name -> (train settings, trainable params beyond LSTM + bias, fixed params); V×d = "VD"
MODES = {
    "fix-input": ({"fix": "input"}, lambda V: V * D, lambda V: V * D),
    "fix-output": ({"fix": "output"}, lambda V: V * D + 1, lambda V: V * D),
    "fix-none": ({"fix": "none"}, lambda V: V * D, lambda V: 0),
    "learn-top": ({"learn_top": 3}, lambda V: 1 + 3 * D, lambda V: V * D),
    "delta-rank": ({"delta_rank": 2}, lambda V: 1 + 2 * (V + D), lambda V: V * D),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_each_mode_trains_with_exact_counts(mode, tiny_corpus_dir, vectors_file, tmp_path):
    settings, extra, fixed = MODES[mode]
    s = train(cfg(tiny_corpus_dir, tmp_path / mode, embedding=str(vectors_file), **settings),
              progress=False)
    V = s["vocab_size"]
    trainable = lstm_params(D, D) + V + extra(V)
    assert s["params"]["trainable"] == trainable and s["params"]["fixed"] == fixed(V)
    assert s["params"]["total"] == trainable + fixed(V)
    assert s["params"]["embedding_fixed"] == fixed(V)
    assert s["params"]["embedding_trainable"] == extra(V) - (1 if mode in (
        "fix-output", "learn-top", "delta-rank") else 0)  # the scale is not the embedding's
    assert math.isfinite(s["val_ppl"]) and s["train_tokens"] > 0
    assert s["tied"] == (mode not in ("fix-input", "fix-output"))
    # one meaning of "fixed": which sides keep the given vectors
    assert s["fixed"] == {"fix-input": "input", "fix-output": "output", "fix-none": "none"}.get(
        mode, "both")
    assert (s["final_scale"] is None) == (mode in ("fix-input", "fix-none"))
    config = json.loads((tmp_path / mode / "config.json").read_text())
    assert config["params"] == s["params"]


def test_fixed_parts_get_no_gradient_or_optimizer_state(tiny_corpus_dir, vectors_file):
    """Built as training builds them, Adam's state holds the trainable parts only."""
    corpus = load_corpus(str(tiny_corpus_dir))
    for settings in ({"learn_top": 3, "delta_rank": 2}, {"fix": "input"}, {"fix": "output"}):
        c = cfg(tiny_corpus_dir, "unused", embedding=str(vectors_file), optimizer="adam",
                lr=0.01, **settings)
        model, _, _ = build_model(c, corpus)
        opt = make_optimizer("adam", [p for p in model.parameters() if p.requires_grad], c.lr, 0)
        before = model.fixed_weight.clone()
        x = corpus.train[:40].view(10, 4)
        out, _ = model(x[:-1], model.init_hidden(4))
        model.loss(out, x[1:].reshape(-1)).backward()
        opt.step()
        assert model.fixed_weight.grad is None and torch.equal(model.fixed_weight, before)
        state = [t for st in opt.state.values() for t in st.values() if t.dim() == 2]
        V = len(corpus.vocab)
        # the only V×d tensors in the state belong to a learned side (fix input/output)
        learned = [p for n, p in model.named_parameters() if n in ("encoder.weight",
                                                                   "decoder_weight")]
        assert sum(t.shape == (V, D) for t in state) == 2 * len(learned)
        if "learn_top" in settings:
            assert model.top_rows.ids.tolist() == _top3(corpus)


def _top3(corpus) -> list[int]:
    counts = torch.bincount(corpus.train, minlength=len(corpus.vocab))
    return sorted(range(len(counts)), key=lambda i: (-counts[i], i))[:3]


def test_fix_none_is_a_learned_tied_model_started_at_the_vectors(tiny_corpus_dir, vectors_file):
    corpus = load_corpus(str(tiny_corpus_dir))
    c = cfg(tiny_corpus_dir, "unused", embedding=str(vectors_file), fix="none",
            embedding_norm="mean-unit")
    from_file, mcfg, _ = build_model(c, corpus)
    rng_after_file = torch.get_rng_state()
    learned, lcfg, _ = build_model(replace(c, embedding="learned", fix=None), corpus)
    assert torch.equal(torch.get_rng_state(), rng_after_file)  # same random numbers drawn
    from lmfix.embedding_spec import resolve_embedding
    rows = normalize_vectors(resolve_embedding(str(vectors_file), corpus.vocab.words, None,
                                               c.seed).matrix, "mean-unit")
    with torch.no_grad():
        learned.encoder.weight.copy_(rows)
    a, b = from_file.state_dict(), learned.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # and they train alike, step for step
    for m in (from_file, learned):
        torch.manual_seed(5)
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        x = corpus.train[:80].view(20, 4)
        out, _ = m(x[:-1], m.init_hidden(4))
        m.loss(out, x[1:].reshape(-1)).backward()
        opt.step()
    assert all(torch.equal(from_file.state_dict()[k], learned.state_dict()[k]) for k in a)


def test_fix_with_learned_and_misfit_parts_are_one_clear_error(tiny_corpus_dir, vectors_file,
                                                               tmp_path, capsys):
    for emb in ("learned", "learned-untied"):
        with pytest.raises(LmfixError, match=f"--fix input applies to given vectors.*{emb}"):
            train(cfg(tiny_corpus_dir, tmp_path / "x", embedding=emb, fix="input"),
                  progress=False)
    assert not (tmp_path / "x").exists()  # refused before anything was written
    with pytest.raises(LmfixError, match="--learn-top 3 .*--fix input"):
        train(cfg(tiny_corpus_dir, tmp_path / "y", embedding=str(vectors_file), fix="input",
                  learn_top=3), progress=False)
    with pytest.raises(LmfixError, match="--delta-rank 2 .*--embedding learned"):
        train(cfg(tiny_corpus_dir, tmp_path / "y", delta_rank=2), progress=False)
    with pytest.raises(LmfixError, match="more than the"):
        train(cfg(tiny_corpus_dir, tmp_path / "z", embedding="random-orthogonal",
                  learn_top=10_000), progress=False)
    code = main(["train", "--data", str(tiny_corpus_dir), "--out", str(tmp_path / "c"),
                 "--embedding", "learned", "--fix", "both", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("lmfix: error: --fix both")
    with pytest.raises(SystemExit) as info:  # a flag's range: argparse's one line
        main(["train", "--data", str(tiny_corpus_dir), "--learn-top", "-1"])
    assert info.value.code == 2
    assert "--learn-top: -1 is not an integer ≥ 0" in capsys.readouterr().err


@pytest.mark.parametrize("text,name,base,settings", [
    ("word2vec", "word2vec", "word2vec", ()),
    ("word2vec:fix=input", "word2vec-fix-input", "word2vec", (("fix", "input"),)),
    ("pmi:learn-top=1000", "pmi-learn-top-1000", "pmi", (("learn_top", 1000),)),
    ("word2vec:delta-rank=4", "word2vec-delta-rank-4", "word2vec", (("delta_rank", 4),)),
    ("learned:emsize=32", "learned-emsize-32", "learned", (("emsize", 32),)),
    ("hadamard:learn-top=1e3:embedding-norm=raw", "hadamard-learn-top-1000-embedding-norm-raw",
     "hadamard", (("learn_top", 1000), ("embedding_norm", "raw"))),
])
def test_variant_syntax(text, name, base, settings):
    assert parse_variant(text) == Variant(name, base, settings)


@pytest.mark.parametrize("text,message", [
    ("word2vec:fix", "not KEY=VALUE"), ("word2vec:fix=", "not KEY=VALUE"),
    ("word2vec:lr=1", "not KEY=VALUE"), ("word2vec:fix=sideways", "fix: 'sideways' is not one of both, input"),
    ("pmi:learn-top=-5", "learn-top: -5 is not an integer ≥ 0"),
    ("pmi:learn-top=2.5", "is not an integer"), ("nonsense:fix=input", "nonsense"),
    ("pmi:fix=input:fix=output", "given twice"),
])
def test_bad_variant_syntax_is_one_clear_error(text, message):
    with pytest.raises(LmfixError, match=message):
        parse_variant(text)


def test_variant_settings_are_checked_before_anything_runs(tiny_corpus_dir, tmp_path):
    base = TrainConfig(fix="input")  # run-wide --fix: for the variants with vectors only
    assert variant_config(base, parse_variant("learned")).fix is None
    assert variant_config(base, parse_variant("pmi")).fix == "input"
    with pytest.raises(LmfixError, match="variant learned-fix-input: --fix input"):
        variant_config(TrainConfig(), parse_variant("learned:fix=input"))
    with pytest.raises(LmfixError, match="learn-top"):
        run("quick", tmp_path / "o", str(tiny_corpus_dir), ["pmi:fix=output:learn-top=2"],
            TINY, progress=False)
    with pytest.raises(LmfixError, match="names a run twice"):
        run("quick", tmp_path / "o", str(tiny_corpus_dir), ["pmi", "pmi"], TINY, progress=False)
    assert not (tmp_path / "o").exists()


def test_frontier_grid_spans_the_issue():
    grid = frontier_variants(64)
    assert len(grid) == len(set(grid)) == 17
    assert grid[:4] == ["learned:emsize=16:nhid=16", "learned:emsize=32:nhid=32", "learned",
                        "learned-untied"]
    for v in ("word2vec", "pmi:fix=input", "word2vec:fix=output", "pmi:fix=none",
              "word2vec:learn-top=5000", "word2vec:delta-rank=16", "random-orthogonal"):
        assert v in grid
    for v in grid:
        cfg = variant_config(TrainConfig(emsize=64, nhid=64), parse_variant(v))  # all valid
        # Smaller learned models shrink the LSTM too: no projection (it barely trains at lr 20).
        assert cfg.nhid == cfg.emsize
    p = PRESETS["frontier"]
    assert p.train["epochs"] == 1 and p.train["max_train_tokens"] is None
    assert p.train["emsize"] == 64 and p.cuda["emsize"] == 512
    assert frontier_variants(512)[:2] == ["learned:emsize=128:nhid=128",
                                          "learned:emsize=256:nhid=256"]


def test_pareto_front():
    pts = [("a", 100, 50.0), ("b", 10, 80.0), ("c", 50, 90.0), ("d", 1000, 60.0),
           ("e", 10, 85.0), ("f", 5, float("inf")), ("g", 2000, 40.0)]
    assert pareto_front(pts) == ["b", "a", "g"]


def test_tiny_frontier_run_writes_frontier_png_and_pareto_table(tiny_corpus_dir, tmp_path):
    out = tmp_path / "out"
    variants = ["learned:emsize=4", "word2vec:fix=input", "word2vec:learn-top=3",
                "pmi:delta-rank=2", "random-orthogonal"]
    run_dirs = run("frontier", out, str(tiny_corpus_dir), variants, TINY, progress=False)
    assert [d.name for d in run_dirs] == ["learned-emsize-4", "word2vec-fix-input",
                                          "word2vec-learn-top-3", "pmi-delta-rank-2",
                                          "random-orthogonal"]
    assert json.loads((out / "runs" / "learned-emsize-4" / "summary.json").read_text())[
        "emsize"] == 4
    assert (out / "embeddings" / "word2vec-d8.bin.intrinsic.json").is_file()
    results = write_report(run_dirs, out)
    png = (out / "frontier.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert results["plots"]["frontier"] == "frontier.png"
    front = results["pareto_front"]
    assert front and [p["params_trainable"] for p in front] == sorted(
        p["params_trainable"] for p in front)
    md = (out / "report.md").read_text()
    assert "## Pareto front" in md
    for p in front:
        assert f"| {p['name']} | {p['params_trainable']:,} |" in md
    assert "## Embedding quality beside perplexity" in md and "word2vec-d8.bin" in md
    html = (out / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "Pareto front" in html  # + frontier

    two = write_report(run_dirs[:2], tmp_path / "two")  # too few for a frontier: a note
    assert two["plots"]["frontier"] is None and not two["pareto_front"]
    assert any("need at least 3 variants" in n for n in two["notes"])
    assert not (tmp_path / "two" / "frontier.png").exists()


def test_frontier_labels_do_not_overprint():
    """Every --fix side of a d = 64 model has the same trainable count: in the first full
    frontier run seven labels sat in one column and printed over each other."""
    from lmfix.plots import _new_figure, separate_labels

    fig = _new_figure(6, 4)
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(5e4, 5e6)
    ax.set_ylim(200, 800)
    points = [(2229630, y) for y in (321.15, 283.36, 281.15, 263.86, 263.23, 247.73, 241.75)]
    points.append((99839, 709.89))  # alone: stays where it is
    labels = [ax.annotate(f"variant-{i}", xy, xytext=(5, 4), textcoords="offset points",
                          fontsize="small") for i, xy in enumerate(points)]
    separate_labels(fig, labels)
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in labels]
    assert not any(boxes[i].overlaps(boxes[j])
                   for i in range(len(boxes)) for j in range(i + 1, len(boxes)))
    # top-to-bottom order kept, so a label's neighbours are its point's neighbours
    tops = [b.y1 for b in boxes[:7]]
    assert tops == sorted(tops, reverse=True)
    assert labels[-1].xyann == (5, 4) and labels[0].xyann == (5, 4)
    # a moved label gets a leader: one empty annotation per moved label
    moved = sum(a.xyann != (5, 4) for a in labels)
    leaders = [t for t in ax.texts if t.get_text() == "" and t.arrowprops]
    assert moved >= 3 and len(leaders) == moved


def test_learn_top_norms_script(tiny_corpus_dir, vectors_file, tmp_path, capsys):
    """scripts/learn_top_norms.py (the README's learn-top 1000 numbers) on tiny runs."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "learn_top_norms.py"
    spec = importlib.util.spec_from_file_location("learn_top_norms", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for name, settings in (("fixed", {}), ("top", {"learn_top": 3})):
        train(cfg(tiny_corpus_dir, tmp_path / name, embedding=str(vectors_file), **settings),
              progress=False)
    capsys.readouterr()
    assert script.main([str(tmp_path / "top"), "--start", str(tmp_path / "fixed")]) == 0
    out = capsys.readouterr().out
    V = len(load_corpus(str(tiny_corpus_dir)).vocab)
    assert out.startswith("3 trained rows: median norm ")
    assert f"the other {V - 3:,}: median 1.00" in out  # unit rows, never trained
    # not a learn-top run, or no run at all: one line, exit 2
    assert script.main([str(tmp_path / "fixed"), "--start", str(tmp_path / "fixed")]) == 2
    assert script.main([str(tmp_path / "nothing"), "--start", str(tmp_path / "fixed")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("learn_top_norms: error: ") for line in err)
