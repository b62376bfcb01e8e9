"""The studies' report: Markdown (``report.md``, PNGs beside it) and a self-contained HTML
(``report.html``, PNGs embedded as data URIs), rebuilt from a study directory's point files
by ``moon report --study S``.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from moon_rec.studies.config import metric_info
from moon_rec.studies.plots import plot_exchange, plot_scaling


def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if abs(v) >= 1e4:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    return str(v)


class _Doc:
    """Blocks rendered to both Markdown and HTML."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, Any]] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, head: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", (head, rows)))

    def img(self, path: Path, alt: str) -> None:
        self.blocks.append(("img", (path, alt)))

    def markdown(self, base: Path) -> str:
        out = []
        for kind, x in self.blocks:
            if kind == "h":
                out.append("#" * x[0] + " " + x[1])
            elif kind == "p":
                out.append(x)
            elif kind == "table":
                head, rows = x
                out.append("| " + " | ".join(head) + " |")
                out.append("|" + "|".join(" --- " for _ in head) + "|")
                out += ["| " + " | ".join(r) + " |" for r in rows]
            else:
                out.append(f"![{x[1]}]({Path(x[0]).relative_to(base).as_posix()})")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
               "</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;"
               "line-height:1.4}table{border-collapse:collapse;font-size:13px;margin:1em 0}"
               "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
               "th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}"
               "code{background:#f3f3f3}</style></head><body>"]
        for kind, x in self.blocks:
            if kind == "h":
                out.append(f"<h{x[0]}>{html.escape(x[1])}</h{x[0]}>")
            elif kind == "p":
                out.append(f"<p>{html.escape(x)}</p>")
            elif kind == "table":
                head, rows = x
                out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head)
                           + "</tr>")
                out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                        for r in rows]
                out.append("</table>")
            else:
                data = base64.b64encode(Path(x[0]).read_bytes()).decode()
                out.append(f"<p><img alt='{html.escape(x[1])}' "
                           f"src='data:image/png;base64,{data}'></p>")
        out.append("</body></html>")
        return "\n".join(out)


def _ci(v: Any, ci: Any, digits: int = 3) -> str:
    """``value [lo, hi]``."""
    if v is None:
        return "-"
    return f"{v:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else " [-]")


def _interval(ci: Any, digits: int = 2) -> str:
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "-"


def _pm(v: Any, sd: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


def _exchange_section(doc: _Doc, res: dict[str, Any], png: Path) -> None:
    doc.h(2, "Exchange rate: which intermediate metric predicts ranker AUC")
    rows = {n: r for n, r in res["versions"].items() if r.get("auc") is not None}
    boot = res.get("bootstrap") or {}
    doc.p(f"{len(rows)} encoder versions; ranker `{res.get('ranker_experiment')}` with seeds "
          f"{res.get('seeds')} per version (AUC: mean ± std over the seeds). The exchange "
          "rate is the least-squares slope of AUC on the metric over the versions (AUC gained "
          "per unit of the metric); every interval is a 95% percentile bootstrap over "
          f"{boot.get('levels', 'versions')} ({boot.get('n_resamples', '-')} resamples).")
    noise = res.get("noise") or {}
    ratio = noise.get("ratio")
    doc.p(f"Noise check: the AUC spread across versions is "
          f"{_f(noise.get('auc_version_range'))} (max - min of the seed means) against a mean "
          f"seed-to-seed std of {_f(noise.get('auc_seed_std_mean'))} over "
          f"{noise.get('versions_with_std', 0)} versions: "
          + (f"{ratio:.1f}x, " if ratio is not None else "not measured, ")
          + ("so the study resolves its versions (the standard is >= "
             f"{noise.get('factor', 10):.0f}x)." if noise.get("resolves") else
             f"short of the >= {noise.get('factor', 10):.0f}x standard: the versions are not "
             "resolved."))
    ref = res.get("reference")
    if ref:
        doc.p(f"ID-only reference `{ref['experiment']}` on the same ranker set and seeds: AUC "
              f"{_pm(ref.get('auc'), ref.get('auc_std'))}, cold-item AUC "
              f"{_pm(ref.get('auc_cold'), ref.get('auc_cold_std'))}.")
    ref_auc = (ref or {}).get("auc")
    main = [m for m in ("recall@1", "recall@10", "recall@100", "text_recall@10", "probe_acc",
                        "image_title_align", "style_r2") if m in res["candidate_metrics"]]
    head = ["version", "group", "pairs seen", "negatives",
            *[metric_info(m).label for m in main], "AUC (mean ± std)", "AUC - ID-only",
            "cold AUC", "model_version"]
    order = sorted(res["versions"], key=lambda n: res["versions"][n].get("auc") or 0)
    table = []
    for name in order:
        r = res["versions"][name]
        lift = (r["auc"] - ref_auc) if r.get("auc") is not None and ref_auc is not None else None
        table.append([name, str(r.get("group", "")), _f(r.get("pairs_seen")),
                      _f(r.get("negatives")), *[_f(r.get(m)) for m in main],
                      _pm(r.get("auc"), r.get("auc_std")), _f(lift),
                      _pm(r.get("auc_cold"), r.get("auc_cold_std")), str(r.get("model_version"))])
    doc.table(head, table)
    dims = [m for m in res["candidate_metrics"] if m.startswith("recall@") and "_d" in m]
    if dims:
        doc.p("Image-search recall per Matryoshka prefix:")
        doc.table(["version", *[metric_info(m).label.replace("image-search ", "") for m in dims]],
                  [[n, *[_f(res["versions"][n].get(m)) for m in dims]] for n in order])
    summ = res.get("metrics") or {}
    if summ:
        cold = (res.get("cold") or {}).get("metrics") or {}
        gaps = res.get("best_gap") or {}
        head = ["metric", "real catalog", "exchange rate (AUC/unit) [95%]", "Spearman [95%]",
                "Kendall [95%]", "cold: rate [95%]", "cold: Spearman [95%]",
                "cold: Kendall [95%]", "Spearman gap to best [95%]"]
        table = []
        for m in res.get("ranking") or res["candidate_metrics"]:
            s, c, info = summ[m], cold.get(m, {}), metric_info(m)
            table.append([info.label, "yes" if info.real_catalog else "no (oracle)",
                          _ci(s.get("slope"), s.get("slope_ci"), 4),
                          _ci(s.get("spearman"), s.get("spearman_ci"), 2),
                          _ci(s.get("kendall"), s.get("kendall_ci"), 2),
                          _ci(c.get("slope"), c.get("slope_ci"), 4),
                          _ci(c.get("spearman"), c.get("spearman_ci"), 2),
                          _ci(c.get("kendall"), c.get("kendall_ci"), 2),
                          "best" if m == res.get("best") else _interval(gaps.get(m))])
        doc.table(head, table)
        doc.p("Real catalog: whether a user can compute the metric on their own catalog (their "
              "photos, titles, categories and logs) or whether it needs the synthetic world's "
              "ground truth. Spearman gap to best: the interval of Spearman(best) - "
              "Spearman(metric) on the same resamples; above zero means the best guide is "
              "really ahead.")
        best = res.get("best")
        if best:
            s = summ[best]
            doc.p(f"Best guide (highest Spearman, then Kendall, then the narrower interval): "
                  f"{metric_info(best).label}, Spearman {_ci(s.get('spearman'), s.get('spearman_ci'), 2)}, "
                  f"exchange rate {_ci(s.get('slope'), s.get('slope_ci'), 4)} AUC per unit."
                  + (f" On cold items: {metric_info(res['cold']['best']).label}."
                     if (res.get("cold") or {}).get("best") else ""))
    doc.p(f"Conclusion: {res.get('conclusion')}")
    doc.img(png, "metric vs AUC")


def _scaling_section(doc: _Doc, res: dict[str, Any], png: Path) -> None:
    doc.h(2, f"Scaling: {res['x_label']}")
    keys = list(res["series"])
    head = ["x", "version", *[res["series"][k] for k in keys], "AUC std"]
    rows = [[_f(r["x"]), str(r.get("version")), *[_f(r.get(k)) for k in keys], _f(r.get("auc_std"))]
            for r in res["rows"]]
    doc.table(head, rows)
    frows = []
    for k, fit in res["fits"].items():
        verdict = "yes" if fit.get("identified") else f"no: {fit.get('reason')}"
        if not fit.get("ok"):
            frows.append([res["series"][k], "-", "-", "-", "-", "-", "-",
                          f"{fit.get('n', 0)} / {fit.get('decades', 0):.2f}", verdict])
            continue
        ci = fit.get("ci") or {}

        def c(p: str, fit: dict[str, Any] = fit, ci: dict[str, Any] = ci) -> str:
            band = ci.get(p)
            return f"{fit[p]:.4g}" + (f" [{band[0]:.3g}, {band[1]:.3g}]" if band else " [-]")

        frows.append([res["series"][k], c("a"), c("b"), c("c"), _f(fit.get("rmse")),
                      _f(fit.get("gain_next_doubling")), _f(fit.get("x_flat")),
                      f"{fit['n']} / {fit['decades']:.2f}", verdict])
    if frows:
        doc.table(["quality", "a (asymptote) [95% CI]", "b [CI]", "c (exponent) [CI]", "RMSE",
                   "gain of next doubling", "x where a doubling < 0.005", "points / decades",
                   "identified"], frows)
        doc.p("A fit counts as identified with >= 5 points over >= 1.5 decades, the exponent "
              "off its bounds and finite intervals, the exponent's excluding 0.")
    doc.img(png, f"scaling {res['axis']}")


def _cost_section(doc: _Doc, study_dir: Path, store: Any) -> None:
    rows = []
    runs = sorted(study_dir.glob("shared/encoder/*/summary.json"))
    if runs:
        secs = [json.loads(r.read_text()).get("seconds") or 0.0 for r in runs]
        rows.append(["recipe stages (loop encoder step)", str(len(runs)), f"{sum(secs):.0f}",
                     ", ".join(f"{r.parent.name} {s:.0f}" for r, s in zip(runs, secs, strict=True))])
    variants = sorted(study_dir.glob("encoders/*/summary.json"))
    if variants:
        secs = [json.loads(r.read_text()).get("seconds") or 0.0 for r in variants]
        rows.append(["variant runs", str(len(variants)), f"{sum(secs):.0f}",
                     f"mean {sum(secs) / len(secs):.1f}"])
    for kind in ("encoder", "metrics", "ranker", "reference", "seq_len"):
        recs = store.all(kind)
        if recs:
            secs = [r.get("seconds") or 0.0 for r in recs]
            rows.append([f"{kind} points", str(len(recs)), f"{sum(secs):.0f}",
                         f"mean {sum(secs) / len(secs):.1f}"])
    if rows:
        doc.h(2, "Cost")
        doc.p("Wall seconds as recorded (on a shared machine they include waiting for the "
              "CPU). An encoder point's time includes the recipe or variant run it started; "
              "the trainer summaries give the runs' own.")
        doc.table(["what", "count", "seconds (sum)", "detail"], rows)


def build_report(study_dir: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Re-analyse a study directory's points and write plots + report.md + report.html into
    ``out`` (default: ``<study>/report``). Returns {"markdown", "html", "figures"}."""
    from moon_rec.studies.config import StudyConfig
    from moon_rec.studies.exchange import analyse_exchange
    from moon_rec.studies.runs import Study
    from moon_rec.studies.scaling import AXES, analyse_axis

    study_dir = Path(study_dir)
    manifest_path = study_dir / "study.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found (not a study directory?)")
    manifest = json.loads(manifest_path.read_text())
    study = Study(manifest["world"], study_dir, StudyConfig.model_validate(manifest["config"]),
                  progress=False)
    out = Path(out) if out is not None else study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    doc = _Doc()
    doc.h(1, "MOON studies: exchange rate and scaling laws")
    cfg = manifest["config"]
    doc.p(f"World: `{manifest['world']}`. Study preset `{cfg.get('preset')}`, seed "
          f"{cfg.get('seed')}; encoder budget: {json.dumps(cfg['encoder'])}; ranker budget: "
          f"{json.dumps(cfg['ranker'])}. Rebuild with `moon report --study {study_dir}`.")
    ranker_set = study_dir / "shared" / "ranker_set.json"
    if ranker_set.is_file():
        info = json.loads(ranker_set.read_text())
        doc.p(f"Ranker set: {info['train_rows']:,} train and {info['test_rows']:,} test "
              f"impressions (of {info['source_rows']:,}), the same for every point.")
    figures = []
    studies = manifest.get("studies", {})
    if "exchange-rate" in studies:
        res = analyse_exchange(study)
        png = plot_exchange(res, out / "exchange_rate.png")
        figures.append(png)
        _exchange_section(doc, res, png)
    for axis in AXES:
        if f"scaling-{axis}" in studies or (axis != "seq_len" and "exchange-rate" in studies):
            res = analyse_axis(study, axis)
            if not any(any(r.get(k) is not None for k in res["series"]) for r in res["rows"]):
                continue
            png = plot_scaling(res, out / f"scaling_{axis}.png")
            figures.append(png)
            _scaling_section(doc, res, png)
    _cost_section(doc, study_dir, study.store)
    # the tables behind the report travel with it (docs/studies/<preset>/)
    if out.resolve() != study_dir.resolve():
        for name in ("study.json", "exchange_rate.json", "shared/ranker_set.json",
                     *(f"scaling_{a}.json" for a in AXES)):
            src = study_dir / name
            if src.is_file():
                (out / src.name).write_bytes(src.read_bytes())
    md = out / "report.md"
    md.write_text(doc.markdown(out))
    page = out / "report.html"
    page.write_text(doc.html("MOON studies"))
    return {"markdown": str(md), "html": str(page), "figures": [str(f) for f in figures]}
