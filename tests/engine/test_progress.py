"""Progress output: a bar on a terminal, plain periodic lines elsewhere, nothing when off."""

from __future__ import annotations

import io

import pytest

from wrel.core.progress import Progress, format_duration, progress_mode


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WREL_PROGRESS", raising=False)
    monkeypatch.setenv("WREL_PROGRESS_INTERVAL", "0")
    out = io.StringIO()
    with Progress(4, "joint epoch 2/6", stream=out) as bar:
        for step in range(4):
            bar.update(1, step=step + 1, loss=0.5 - 0.1 * step)
    lines = out.getvalue().splitlines()
    assert len(lines) == 5  # one per update (interval 0) and one at the end
    assert lines[0].startswith("[wrel] joint epoch 2/6: 1/4 (25%), step 1, loss 0.5")
    assert "ETA" in lines[0] and "it/s" in lines[0]
    assert lines[-1].startswith("[wrel] joint epoch 2/6: 4/4 (100%), step 4, loss 0.2")
    assert "\r" not in out.getvalue()


def test_interval_limits_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WREL_PROGRESS", raising=False)
    monkeypatch.setenv("WREL_PROGRESS_INTERVAL", "3600")
    out = io.StringIO()
    with Progress(100, "naive epoch 1/2", stream=out) as bar:
        for _ in range(100):
            bar.update(1)
    assert len(out.getvalue().splitlines()) == 1  # only the closing line


def test_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WREL_PROGRESS", raising=False)
    out = _Tty()
    assert progress_mode(out) == "bar"
    with Progress(10, "full epoch 1/2", stream=out) as bar:
        bar.update(3, loss=0.25)
    text = out.getvalue()
    assert "full epoch 1/2" in text and "3/10" in text and "loss=0.25" in text
    assert "<" in text  # tqdm's elapsed<remaining (the ETA)


def test_disabled_or_forced_off_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    with Progress(3, "x", stream=out, enabled=False) as bar:
        bar.update(3)
    monkeypatch.setenv("WREL_PROGRESS", "off")
    with Progress(3, "x", stream=_Tty()) as bar:
        bar.update(3)
    assert out.getvalue() == ""
    monkeypatch.setenv("WREL_PROGRESS", "lines")
    assert progress_mode(_Tty()) == "lines"
    monkeypatch.setenv("WREL_PROGRESS", "loud")
    with pytest.raises(ValueError, match="WREL_PROGRESS"):
        progress_mode()


def test_resumed_progress_starts_at_initial(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WREL_PROGRESS", "lines")
    monkeypatch.setenv("WREL_PROGRESS_INTERVAL", "0")
    out = io.StringIO()
    with Progress(10, "teacher epoch 3/6", stream=out, initial=6) as bar:
        bar.update(1)
    assert out.getvalue().splitlines()[0].startswith("[wrel] teacher epoch 3/6: 7/10 (70%)")


def test_format_duration() -> None:
    assert format_duration(59.6) == "1:00"
    assert format_duration(3725) == "1:02:05"


def test_synthesis_writes_plain_lines_into_a_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`wrel data synth` reports through the same helper: plain lines, no carriage returns,
    when its output is not a terminal (a log file)."""
    from wrel.data.synth import generate_benchmark
    from wrel.data.synth.config import SynthConfig

    monkeypatch.delenv("WREL_PROGRESS", raising=False)
    monkeypatch.setenv("WREL_PROGRESS_INTERVAL", "0")
    cfg = SynthConfig(image_size=32, num_train=3, num_val=1, num_test=1, refs_per_image=1)
    generate_benchmark(tmp_path, cfg)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("[wrel] synth")]
    assert lines[0].startswith("[wrel] synth: 1/5 (20%)") and "\r" not in err
    assert lines[-1].startswith("[wrel] synth: 5/5 (100%)")
    generate_benchmark(tmp_path / "quiet", cfg, progress=False)
    assert "[wrel]" not in capsys.readouterr().err
