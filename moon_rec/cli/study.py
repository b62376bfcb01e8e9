"""``moon study all | exchange-rate | scaling`` and ``moon report``.

Both studies write into one study directory (``--out``), share its points (an encoder
version trained for one is reused by the other) and resume: a finished point is never
recomputed. Budgets come from ``--preset`` (configs/studies/<preset>.yaml; default: the
world's preset when one exists, else ``tiny``) or ``--config FILE``, with ``--set
key.sub=value`` overrides.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_OUT = Path("artifacts") / "studies"


def _common(p: argparse.ArgumentParser, world_required: bool = True) -> None:
    p.add_argument("--world", required=world_required, type=Path,
                   help="world directory" + ("" if world_required else
                                             " (default: generate OUT/shared/world)"))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"study directory (default {DEFAULT_OUT})")
    p.add_argument("--preset", default=None, help="configs/studies/<preset>.yaml")
    p.add_argument("--config", type=Path, default=None, help="a study YAML instead of a preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set ranker.seeds=[0,1] (repeatable)")
    p.add_argument("--training-set", type=Path, default=None,
                   help="the full ranker training set (default: built once into "
                   "OUT/shared/training_set.parquet)")
    p.add_argument("--no-report", action="store_true", help="do not rebuild the report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    study = sub.add_parser("study", help="exchange-rate and scaling-law studies")
    ssub = study.add_subparsers(dest="study_command", metavar="STUDY")
    ssub.required = True

    everything = ssub.add_parser(
        "all", help="the exchange-rate study, the three scaling axes and the report",
        description="Everything `make study` runs, resumable, with one progress bar: the full "
        "encoder recipe (the loop's encoder step, keeping snapshots) and the variant runs, "
        "every version's intermediate metrics and ranker AUC over the ranker seeds, the "
        "ID-only reference, the seq_len sweep; then the statistics and the report.")
    _common(everything, world_required=False)
    everything.add_argument("--report-out", type=Path, default=None,
                            help="report folder (default OUT/report)")
    everything.set_defaults(func=_all)

    ex = ssub.add_parser(
        "exchange-rate", help="intermediate metrics vs ranker AUC over encoder versions",
        description="Encoder versions of spread-out quality (untrained, snapshots along the "
        "full recipe, its stages, variants: text-only, image-only, no hard negatives, queue "
        "sizes, no Matryoshka; given encoders), their candidate metrics (image-search recall@K "
        "per Matryoshka size, text-query recall, category probe, image-title alignment, style "
        "probe) and ranker AUC over several seeds; per metric the exchange rate, Spearman and "
        "Kendall with bootstrap intervals, overall and on cold items, and the best guide.")
    _common(ex)
    ex.set_defaults(func=_exchange)

    sc = ssub.add_parser(
        "scaling", help="power-law fits along tokens, negatives or seq_len",
        description="Sweep post-training pairs seen (tokens), negatives per query "
        "(negatives) or the ranker's behaviour-sequence length (seq_len); fit quality = "
        "a - b * (x/x0)^-c with confidence intervals and report where returns flatten.")
    _common(sc)
    sc.add_argument("--axis", required=True, choices=("tokens", "negatives", "seq_len"))
    sc.add_argument("--with-auc", action="store_true",
                    help="tokens/negatives: also train the ranker on every point")
    sc.set_defaults(func=_scaling)

    rep = sub.add_parser("report", help="rebuild the studies' plots and report",
                         description="Re-analyse a study directory's finished points and "
                         "write exchange_rate.png, scaling_<axis>.png, report.md and a "
                         "self-contained report.html.")
    rep.add_argument("--study", type=Path, default=DEFAULT_OUT, help="study directory")
    rep.add_argument("--out", type=Path, default=None, help="report folder (default STUDY/report)")
    rep.set_defaults(func=_report)


def _config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from moon_rec.studies.jobs import study_config

    return study_config(args.world, args.preset, args.config, args.overrides)


def _all(args: argparse.Namespace) -> int:
    from moon_rec.studies.jobs import run_all

    summary = run_all(args.world, args.out, _config(args), training_set=args.training_set,
                      progress=not args.quiet, report=not args.no_report,
                      report_out=args.report_out)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _exchange(args: argparse.Namespace) -> int:
    from moon_rec.studies.jobs import run_exchange_rate

    summary = run_exchange_rate(args.world, args.out, _config(args),
                                training_set=args.training_set, progress=not args.quiet,
                                report=not args.no_report)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _scaling(args: argparse.Namespace) -> int:
    from moon_rec.studies.jobs import run_scaling

    summary = run_scaling(args.world, args.out, _config(args), args.axis,
                          training_set=args.training_set, progress=not args.quiet,
                          with_auc=args.with_auc, report=not args.no_report)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _report(args: argparse.Namespace) -> int:
    from moon_rec.studies.jobs import build

    print(json.dumps(build(args.study, args.out), indent=2))
    return 0
