"""The `moon` command end to end for the data subcommands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from moon_rec.cli import build_parser, main


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, sp in sub.choices.items():  # type: ignore[union-attr]
        assert sp.format_help().strip(), name
    with pytest.raises(SystemExit) as info:
        main(["world", "generate", "--help"])
    assert info.value.code == 0
    assert "--preset" in capsys.readouterr().out


def test_generate_validate_show_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "W"
    assert main(["world", "generate", "--preset", "tiny", "--seed", "123", "--out", str(out),
                 "--n-items", "80", "--n-requests", "300", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n_items"] == 80 and printed["seed"] == 123
    assert main(["world", "validate", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and report["tables"]["items"]["rows"] == 80
    # a second generate with the same config is a no-op; another config needs --overwrite
    assert main(["world", "generate", "--preset", "tiny", "--seed", "123", "--out", str(out),
                 "--n-items", "80", "--n-requests", "300", "--quiet"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["world", "generate", "--preset", "tiny", "--seed", "9", "--out", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    sheet = tmp_path / "sheet.png"
    assert main(["world", "show", str(out), "--n", "6", "--out", str(sheet)]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(sheet) as im:
        w, h = im.size
    assert h > 6 * 64 and w > 3 * 64
    assert main(["world", "summary", str(out)]) == 0
    assert "config" not in json.loads(capsys.readouterr().out)


def test_console_script_reports_bad_input_without_traceback(tmp_path: Path) -> None:
    moon = Path(sys.executable).with_name("moon")
    proc = subprocess.run([str(moon), "world", "validate", str(tmp_path / "missing")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "world directory not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_building_the_cli_does_not_import_the_heavy_stack() -> None:
    """`moon --help` stays instant: subcommand modules import torch/faiss/feast lazily."""
    code = (
        "import sys; from moon_rec.cli import build_parser; build_parser();"
        "heavy = [m for m in ('torch', 'faiss', 'torchrec', 'feast', 'transformers') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""


def test_os_and_arrow_errors_exit_2_naming_the_file(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The top-level handler turns OSError subclasses and pyarrow errors into
    `error: FILE: why`, exit 2; other exceptions (bugs) keep their traceback."""
    import pyarrow as pa

    import moon_rec.cli.data as data_cli

    sheet = tmp_path / "sheet.png"
    sheet.mkdir()  # IsADirectoryError from the image writer
    assert main(["world", "show", str(tiny_world), "--n", "2", "--out", str(sheet)]) == 2
    assert capsys.readouterr().err == f"error: {sheet}: Is a directory\n"
    raised: list[BaseException] = [
        PermissionError(13, "Permission denied", "/w/items.parquet"),
        pa.ArrowIOError("Cannot open for reading: /w/x.parquet"),
        pa.ArrowTypeError("Unable to merge: Field a has incompatible types"),
        pa.ArrowInvalid("Parquet magic bytes not found in footer"),
    ]
    expected = [
        "error: /w/items.parquet: Permission denied\n",
        "error: Cannot open for reading: /w/x.parquet\n",
        "error: unreadable data (ArrowTypeError: Unable to merge: Field a has incompatible types)\n",
        "error: Parquet magic bytes not found in footer\n",
    ]
    for exc, want in zip(raised, expected, strict=True):
        def boom(args: object, exc: BaseException = exc) -> int:
            raise exc

        monkeypatch.setattr(data_cli, "_summary", boom)
        assert main(["world", "summary", str(tiny_world)]) == 2
        assert capsys.readouterr().err == want

    def bug(args: object) -> int:
        raise KeyError("a bug")

    monkeypatch.setattr(data_cli, "_summary", bug)
    with pytest.raises(KeyError):
        main(["world", "summary", str(tiny_world)])


def test_generate_over_a_garbage_world_json_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "W"
    out.mkdir()
    (out / "world.json").write_text("{not json")
    assert main(["world", "generate", "--preset", "tiny", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out / 'world.json'}: invalid JSON") and "--overwrite" in err
