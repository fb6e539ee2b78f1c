"""tokenmill.core.plots: every chart is a PNG written where asked, its folder made."""

from __future__ import annotations

from tokenmill.core import plots

PNG = b"\x89PNG\r\n\x1a\n"


def test_every_chart_writes_a_png_into_a_folder_it_makes(tmp_path):
    funnel = [{"stage": "read", "in": 10, "out": 10, "dropped": 0, "quarantined": 0}]
    funnel.append({"stage": "gopher", "in": 10, "out": 7, "dropped": 2, "quarantined": 1})
    history = [{"step": s, "train/loss": 5.0 - s / 10, "train/tokens_seen": 100 * s} for s in range(1, 6)]
    ablation = [{"recipe": "raw", "clean": 5.1, "clean_spread": 0.01}, {"recipe": "filtered", "clean": 5.0}]
    bakeoff = [{"family": "gpt", "token_loss": 5.0, "unigram_baseline": 6.0, "tokens_per_s": 1000.0}]
    paths = [
        plots.funnel_chart(funnel, tmp_path / "a" / "funnel.png"),
        plots.loss_curve(history, tmp_path / "b" / "loss.png"),
        plots.ablation_chart(ablation, ["clean"], tmp_path / "c" / "ablation.png"),
        plots.bakeoff_chart(bakeoff, {"gpt": history}, tmp_path / "d" / "bakeoff.png"),
    ]
    for path in paths:
        assert path.read_bytes().startswith(PNG) and path.stat().st_size > 2_000
