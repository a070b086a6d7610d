"""The command line's answers to a newcomer's typos: a flag or command name gets "did you mean", and submit and
exporter refuse an unknown IMGWORKER_* variable as the worker does (exit 2, a message, no traceback)."""

from __future__ import annotations

import pytest

from imgworker.commands.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own exit
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["submit", "--widht", "512", "a.jpg", "b.jpg"], "--widht -> --width"),
        (["worker", "--server", "127.0.0.1:1", "--concurency", "3"], "--concurency -> --concurrency"),
        (["exporter", "--sever", "127.0.0.1:1"], "--sever -> --server"),
        (["sumbit", "a.jpg", "b.jpg"], "sumbit -> submit"),
    ],
)
def test_typos_get_a_hint(argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(argv, capsys)
    assert code == 2 and f"did you mean: {hint}?" in err, err
    assert "Traceback" not in err


def test_a_flag_of_another_command_is_not_suggested(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["health", "--concurrency", "2"], capsys)
    assert code == 2 and "unrecognized arguments" in err and "did you mean" not in err


@pytest.mark.parametrize("command", [["submit", "a.jpg", "b.jpg"], ["exporter", "--server", "127.0.0.1:1"]])
def test_unknown_imgworker_variables_are_refused(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMGWORKER_SERVRS", "127.0.0.1:1")
    code, err = run(command, capsys)
    assert code == 2 and "unknown environment variable IMGWORKER_SERVRS (did you mean IMGWORKER_SERVERS?)" in err


def test_imgworker_log_json_is_not_a_setting() -> None:
    """IMGWORKER_LOG_JSON was accepted and did nothing; it is refused like any other unknown name now."""
    from imgworker.core.config import ConfigError, from_env

    with pytest.raises(ConfigError, match="unknown environment variable IMGWORKER_LOG_JSON"):
        from_env({"IMGWORKER_LOG_JSON": "1"})
