"""`make demo` end to end with the smoke preset: benchmark, training, evaluation, figures."""

import os

from blade.demo import main


def test_demo_runs_end_to_end_and_reuses_a_finished_run(tmp_path, capsys):
    args = ["--preset", "smoke", "--out", str(tmp_path / "demo"), "--data", str(tmp_path / "data"),
            "--train", "8", "--val", "4", "--no-progress"]
    main(args)
    out = capsys.readouterr().out
    for k in range(1, 6):
        assert f"[{k}/5]" in out
    assert "FG-" in out and "mean" in out and "COCO mask AP" in out
    for name in ("scenes.png", "qualitative.png", "eval/levels.csv", "eval/objects.csv",
                 "run/checkpoints/last.pt"):
        assert os.path.getsize(tmp_path / "demo" / name) > 0, name
    main(args)  # the second time: data kept, training reused
    out = capsys.readouterr().out
    assert "exists, kept" in out and "finished earlier, reused" in out
