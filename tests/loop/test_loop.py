"""The loop's runner: skipping, resuming, re-running downstream, and keys that cover the
code a step runs; every step is the `moon` commands it prints."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from moon_rec.command import MoonCommand, run_parsed
from moon_rec.loop import (
    Layout,
    Step,
    StepFailed,
    _import_graph,
    code_digest,
    code_modules,
    command_step,
    encoder_step,
    import_steps,
    imported_main_steps,
    main_steps,
    ranker_experiments,
    run_steps,
    serving_steps,
    step_key,
)


def test_run_steps_skips_resumes_and_reruns_downstream(tmp_path: Path) -> None:
    calls: list[str] = []

    def make(name: str, out: Path, fail: list[bool] | None = None) -> Step:
        def run() -> None:
            calls.append(name)
            if fail and fail[0]:
                fail[0] = False
                raise KeyboardInterrupt  # a kill half way
            out.write_text(name)

        return Step(name, out, run, {"p": 1})

    fail = [True]
    a = make("a", tmp_path / "a")
    b = Step(
        "b",
        tmp_path / "b",
        make("b", tmp_path / "b", fail).run,
        {"p": 1},
        ("a",),
        clean=(tmp_path / "b-partial",),
    )
    state = tmp_path / "state.json"
    (tmp_path / "b-partial").write_text("x")
    with pytest.raises(KeyboardInterrupt):
        run_steps([a, b], state)
    assert not (tmp_path / "b-partial").exists()  # a fresh start cleans
    (tmp_path / "b-partial").write_text("x")
    run_steps([a, b], state)  # a is up to date; b resumes: nothing cleaned
    assert calls == ["a", "b", "b"] and (tmp_path / "b-partial").exists()
    run_steps([a, b], state)
    assert calls == ["a", "b", "b"]
    a2 = Step("a", a.output, a.run, {"p": 2})  # a's parameters change: a and b re-run
    run_steps([a2, b], state)
    assert calls == ["a", "b", "b", "a", "b"]
    rec = json.loads(state.read_text())
    assert list(rec) == ["a", "b"] and rec["b"]["seconds"] >= 0
    with pytest.raises(ValueError, match="no such step"):
        run_steps([a2, b], state, force=["c"])


def _toy_package(root: Path) -> None:
    pkg = root / "toy_loop_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "job.py").write_text("from toy_loop_pkg import core\n\ndef run():\n    return core.f()\n")
    (pkg / "core.py").write_text("def f():\n    return 1\n")
    (pkg / "other.py").write_text("def g():\n    return 2\n")


def test_a_code_change_reruns_exactly_the_steps_that_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _toy_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    packages = ("toy_loop_pkg",)
    _import_graph.cache_clear()
    assert code_modules(["toy_loop_pkg.job"], packages) == ["toy_loop_pkg.core",
                                                             "toy_loop_pkg.job"]
    job0 = code_digest(["toy_loop_pkg.job"], packages)
    other0 = code_digest(["toy_loop_pkg.other"], packages)
    # an edit of a module the job imports changes the job's key, not the other's
    (tmp_path / "toy_loop_pkg" / "core.py").write_text("def f():\n    return 3\n")
    assert code_digest(["toy_loop_pkg.job"], packages) != job0
    assert code_digest(["toy_loop_pkg.other"], packages) == other0
    _import_graph.cache_clear()
    sys.modules.pop("toy_loop_pkg", None)


def test_project_step_keys_cover_their_code_only() -> None:
    closure = code_modules(["moon_rec.featurestore.feature_tables"])
    assert "moon_rec.featurestore.tables" in closure
    assert not any(m.startswith(("moon_rec.ranking", "moon_rec.training")) for m in closure)
    a = Step("s", Path("/nonexistent"), lambda: None, code=("moon_rec.featurestore.feature_tables",))
    b = Step("s", Path("/nonexistent"), lambda: None, code=("moon_rec.ranking.compare",))
    assert step_key(a, {}) != step_key(b, {})


def test_main_steps_name_their_commands(tmp_path: Path) -> None:
    steps = main_steps(Layout.at(tmp_path), "tiny", 0, ranker_experiments("tiny"))
    names = [s.name for s in steps]
    assert len(names) == len(set(names))
    for s in steps:
        assert s.command.startswith("moon "), s.name
        assert set(s.deps) <= set(names[: names.index(s.name)]), s.name
        assert s.code, s.name


def test_imported_main_steps_name_their_commands(tmp_path: Path) -> None:
    """The MovieLens loop: import instead of generate, a text-tower post-training encoder
    step, then the same steps; rankers without oracle world and without query vectors."""
    from moon_rec.loop import IMPORT_WORLD, POSTTRAIN_ENCODER, RANKERS, imported_main_steps

    steps = imported_main_steps(Layout.at(tmp_path / "art"), "movielens", tmp_path / "ml",
                                tmp_path / "tower", ranker_experiments("movielens"))
    names = [s.name for s in steps]
    assert names[0] == IMPORT_WORLD and POSTTRAIN_ENCODER in names
    assert len(names) == len(set(names))
    for s in steps:
        assert s.command.startswith("moon "), s.name
        assert set(s.deps) <= set(names[: names.index(s.name)]), s.name
        assert s.code, s.name
    by = {s.name: s for s in steps}
    assert "--text-tower" in by[POSTTRAIN_ENCODER].command
    assert "pretrain" not in by[POSTTRAIN_ENCODER].command
    assert "--world" not in by[RANKERS].command and "--query-" not in by[RANKERS].command
    with pytest.raises(ValueError, match="unknown import source"):
        imported_main_steps(Layout.at(tmp_path), "netflix", tmp_path, tmp_path, ["a", "b"])


def test_encoder_step_snapshots_change_only_their_own_key(tmp_path: Path) -> None:
    from moon_rec.loop import encoder_step
    from moon_rec.training.commands import snapshot_dir

    layout = Layout.at(tmp_path)
    plain = encoder_step(layout, "tiny", threads=1)
    assert set(plain.params) == {"recipe", "threads"}  # the demo's key is what it was
    kept = encoder_step(layout, "tiny", threads=1, overrides=["stage1.steps=12"],
                        snapshots={"stage1": [6, 3, 3], "stage2": []})
    assert kept.params["snapshots"] == {"stage1": [3, 6]}
    assert kept.params["overrides"] == ["stage1.steps=12"]
    assert step_key(plain, {"generate world": "k"}) != step_key(kept, {"generate world": "k"})
    assert "--set stage1.steps=12" in kept.command
    assert snapshot_dir(layout.encoder / "stage1", 3).name == "step-000003"
    with pytest.raises(ValueError, match="unknown stages"):
        encoder_step(layout, "tiny", snapshots={"stage3": [1]})


def _every_loop_step(tmp_path: Path) -> list[Step]:
    """The steps of every composition of the loop: the synthetic and MovieLens demos, an
    imported world copied in (``make demo WORLD_DIR=W``), the studies' recipe (snapshots,
    overrides) and the serving loop."""
    layout = Layout.at(tmp_path / "art")
    return [
        *main_steps(layout, "tiny", 0, ranker_experiments("tiny")),
        *imported_main_steps(Layout.at(tmp_path / "ml"), "movielens", tmp_path / "src",
                             tmp_path / "tower", ranker_experiments("movielens"),
                             encoder_overrides=("stage1.steps=3",)),
        *import_steps(Layout.at(tmp_path / "imported"), "world", tmp_path / "w"),
        encoder_step(layout, "small", threads=1, overrides=["stage1.steps=12"],
                     snapshots={"stage1": [6, 3]}, progress=False),
        *serving_steps(Layout.at(tmp_path / "serve"), given_encoder=False, profile="production",
                       project="p1", seq_len=20, progress=True),
    ]


def _paths(command: MoonCommand) -> list[Path]:
    values = [getattr(command, name) for name in type(command).model_fields]
    flat = [v for value in values for v in (value if isinstance(value, list) else [value])]
    return [v for v in flat if isinstance(v, Path)]


def test_every_printed_command_parses_back_into_the_step(tmp_path: Path) -> None:
    """A step is defined once, as its `moon` commands: each line it prints, parsed by
    `moon`'s own parser, is exactly the request the step runs, handled by that request's
    `run` (so the command writes what the step writes), and the step's output is among
    the paths its commands write."""
    from moon_rec.cli import build_parser

    parser = build_parser()
    for step in _every_loop_step(tmp_path):
        assert step.commands, step.name
        lines = step.command.split(" && ")
        assert len(lines) == len(step.commands), step.name
        for line, command in zip(lines, step.commands, strict=True):
            words = shlex.split(line)
            assert words[0] == "moon", line
            args = parser.parse_args(words[1:])
            assert args.func is run_parsed and args.moon_command is type(command), line
            assert type(command).from_args(args) == command, line
        paths = [p for c in step.commands for p in _paths(c)]
        assert any(step.output == p or p in step.output.parents for p in paths), step.name
        assert set(step.code) == {m for c in step.commands for m in c.code}, step.name


def test_the_recall_step_prints_every_file_it_writes(tmp_path: Path) -> None:
    """The drift this design removes: the step writes recall.json, so its printed command
    does."""
    from moon_rec.loop import RECALL

    layout = Layout.at(tmp_path)
    step = next(s for s in main_steps(layout, "tiny", 0, ranker_experiments("tiny"))
                if s.name == RECALL)
    assert step.output == layout.recall
    assert f"--out {layout.recall}" in step.command
    for stage in ("pretrain", "stage1", "stage2"):
        assert f"--out {layout.recall_stages / (stage + '.json')}" in step.command


class _Record(MoonCommand):
    """A toy command: appends its word to ``log`` and exits with ``status``."""

    words = ("record",)
    word: str
    status: int = 0

    def run(self) -> int:
        _RUNS.append(self.word)
        return self.status


_RUNS: list[str] = []


def test_a_command_step_runs_its_commands_in_order_and_fails_on_a_status(tmp_path: Path) -> None:
    _RUNS.clear()
    ok = command_step("s", tmp_path / "out", [_Record(word="a"), _Record(word="b")])
    assert ok.command == "moon record --word a && moon record --word b"
    ok.run()
    assert _RUNS == ["a", "b"]
    bad = command_step("t", tmp_path / "out", [_Record(word="c", status=2), _Record(word="d")])
    with pytest.raises(StepFailed, match="`moon record --word c --status 2` exited with status 2"):
        bad.run()
    assert _RUNS == ["a", "b", "c"]


def test_the_validate_step_and_its_printed_command_write_the_same_file(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end on a real world: the step's run, then its printed line through `moon`."""
    from moon_rec.cli import main
    from moon_rec.loop import VALIDATE_WORLD, import_steps

    layout = Layout.at(tmp_path, world=tiny_world)
    step = next(s for s in import_steps(layout, "movielens", tmp_path / "src")
                if s.name == VALIDATE_WORLD)
    step.run()
    by_step = step.output.read_text()
    step.output.unlink()
    assert main(shlex.split(step.command)[1:]) == 0
    assert step.output.read_text() == by_step
    assert json.loads(by_step)["valid"] is True
    capsys.readouterr()


def test_argv_renders_switches_lists_and_defaults() -> None:
    from moon_rec.ranking.commands import RankerCompare
    from moon_rec.training.commands import EncoderTrain

    train = EncoderTrain(world=Path("w"), out=Path("o"), overrides=["a=1", "b=2"],
                         snapshot=["stage1:3"], stages=["stage1", "stage2"], quiet=True)
    assert train.argv() == ["encoder", "train", "--world", "w", "--out", "o", "--set", "a=1",
                            "--set", "b=2", "--stages", "stage1", "stage2", "--snapshot",
                            "stage1:3", "--quiet"]
    cmp: Any = RankerCompare(training_set=Path("t"), embeddings=Path("e"), out=Path("o"),
                             as_json=True)
    assert cmp.argv() == ["ranker", "compare", "--training-set", "t", "--embeddings", "e",
                          "--out", "o", "--json"]


def _subparsers(parser: Any) -> list[Any]:
    """Every (sub)parser under ``parser``, depth first."""
    import argparse

    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += _subparsers(sub)
    return found


def test_each_request_is_exactly_its_subcommands_options() -> None:
    """No option of a request-backed subcommand is dropped on the way to its request (an
    option the request lacks would be parsed and silently ignored), and no field of a
    request lacks its option; every request a loop step uses has its subcommand."""
    import argparse

    from moon_rec.cli import build_parser

    seen: set[type[MoonCommand]] = set()
    for sub in _subparsers(build_parser()):
        command = sub.get_default("moon_command")
        if command is None:
            continue
        seen.add(command)
        dests = {a.dest for a in sub._actions
                 if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)}
        assert dests == set(command.model_fields), (command.shell_name(), dests)
    used = {type(c) for s in _every_loop_step(Path("/nonexistent")) for c in s.commands}
    assert used <= seen, used - seen


def test_the_training_set_carries_every_ranker_s_columns(tmp_path: Path) -> None:
    """The loop's training set is built with one spec whose columns cover every ranker's:
    ``full`` on the synthetic world (its key unchanged), ``movielens_full`` for the
    MovieLens rankers (demographics ``full`` lacks); each ranker reads its own spec's."""
    from moon_rec.data.feature_spec import load_feature_spec
    from moon_rec.loop import (
        RANKER_EXPERIMENTS,
        TRAINING_SET,
        imported_main_steps,
        training_features,
    )
    from moon_rec.ranking.config import load_ranker_config

    assert training_features(ranker_experiments("small")) == "full"
    assert training_features(ranker_experiments("tiny")) == "full"
    assert training_features(ranker_experiments("imported")) == "full"
    assert training_features(ranker_experiments("movielens")) == "movielens_full"
    for preset in ("small", "movielens"):
        exps = ranker_experiments(preset)
        built = load_feature_spec(training_features(exps)).table_columns()
        have = {(e.column, e.source) for e in built}
        for exp in exps:
            spec = load_feature_spec(load_ranker_config(RANKER_EXPERIMENTS, exp).feature_set)
            assert {(e.column, e.source) for e in spec.table_columns()} <= have, exp
    steps = imported_main_steps(Layout.at(tmp_path / "art"), "movielens", tmp_path / "ml",
                                tmp_path / "tower", ranker_experiments("movielens"))
    assert next(s for s in steps if s.name == TRAINING_SET).params["features"] == \
        "movielens_full"
    with pytest.raises(ValueError, match="no one feature spec"):
        training_features(["din_full", "din_full_movielens"])


def test_demo_image_tower_picks_the_pretrained_recipe_and_keys_the_weights(tmp_path: Path) -> None:
    """``--image-tower``: the small world's encoder runs ``small_pretrained`` on that file,
    whose bytes are in the encoder step's key; a preset without such a recipe keeps its own."""
    from moon_rec.loop import TRAIN_ENCODER
    from moon_rec.training.commands import encoder_config
    from pipelines.demo import build_steps

    tower = tmp_path / "lite0.pth"
    tower.write_bytes(b"weights v1")

    def encoder(preset: str, image_tower: Path | None) -> Any:
        steps = build_steps(preset, 0, tmp_path / "art", image_tower=image_tower)
        return next(s for s in steps if s.name == TRAIN_ENCODER)

    step = encoder("small", tower)
    assert "--preset small_pretrained" in step.command and f"--image-tower {tower}" in step.command
    first = step_key(step, {d: "k" for d in step.deps})
    tower.write_bytes(b"weights v2")
    assert step_key(encoder("small", tower), {d: "k" for d in step.deps}) != first
    assert "--preset small " in encoder("small", None).command + " "
    assert "--preset tiny" in encoder("tiny", tower).command  # no tiny_pretrained recipe
    # the recipe needs its tower: without one it stops naming the key
    with pytest.raises(ValueError, match=r"image_tower_stages .* image_tower is not set"):
        encoder_config("small_pretrained", None, [])
