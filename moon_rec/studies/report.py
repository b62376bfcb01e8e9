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

from moon_rec.studies.plots import METRIC_LABELS, plot_exchange, plot_scaling


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


def _exchange_section(doc: _Doc, res: dict[str, Any], png: Path) -> None:
    doc.h(2, "Exchange rate: which intermediate metric predicts ranker AUC")
    n = sum(1 for r in res["versions"].values() if r.get("auc") is not None)
    doc.p(f"{n} encoder versions; ranker `{res.get('ranker_experiment')}` with seeds "
          f"{res.get('seeds')}; rate = (AUC_v - AUC_b) / (m_v - m_b) against the weakest "
          f"version b = `{res.get('baseline')}` (DESIGN section 6). Seed-to-seed AUC std "
          f"(mean over versions): {_f(res.get('auc_seed_std_mean'))}; AUC range across "
          f"versions: {_f(res.get('auc_version_range'))}.")
    ref = res.get("reference")
    if ref:
        doc.p(f"ID-only reference `{ref['experiment']}` on the same ranker set: AUC "
              f"{_f(ref.get('auc'))}, cold-item AUC {_f(ref.get('auc_cold'))}.")
    metrics = list(res.get("candidate_metrics") or [])
    head = ["version", "group", "pairs seen", "negatives", *[METRIC_LABELS.get(m, m) for m in
                                                            metrics], "AUC", "AUC std",
            "AUC cold", "model_version"]
    rows = []
    for name, r in sorted(res["versions"].items(), key=lambda kv: kv[1].get("auc") or 0):
        rows.append([name, r.get("group", ""), _f(r.get("pairs_seen")), _f(r.get("negatives")),
                     *[_f(r.get(m)) for m in metrics], _f(r.get("auc")), _f(r.get("auc_std")),
                     _f(r.get("auc_cold")), str(r.get("model_version"))])
    doc.table(head, rows)
    summ = res.get("metrics") or {}
    if summ:
        head = ["metric", "rate median (AUC/unit)", "rate IQR", "relative spread",
                "rate min..max", "fitted rate (slope)", "R^2", "Spearman (p)", "Kendall (p)"]
        rows = []
        for m in res.get("ranking") or metrics:
            s = summ[m]
            rows.append([METRIC_LABELS.get(m, m), _f(s.get("rate_median")), _f(s.get("rate_iqr")),
                         _f(s.get("rate_rel_spread"), 2),
                         f"{_f(s.get('rate_min'), 3)}..{_f(s.get('rate_max'), 3)}",
                         _f(s.get("slope")), _f(s.get("r2"), 3),
                         f"{_f(s.get('spearman'), 3)} ({_f(s.get('spearman_p'), 3)})",
                         f"{_f(s.get('kendall'), 3)} ({_f(s.get('kendall_p'), 3)})"])
        doc.table(head, rows)
        best = str(res.get("best"))
        doc.p(f"Best guide (highest Spearman, then Kendall, then the steadier rate): "
              f"{METRIC_LABELS.get(best, best)}. Ranking: "
              + ", ".join(METRIC_LABELS.get(m, m) for m in res.get("ranking") or []) + ".")
        cold = res.get("cold")
        if cold:
            doc.p("On cold items (AUC on items launched after the training period): best "
                  f"guide {METRIC_LABELS.get(str(cold.get('best')), cold.get('best'))}; Spearman "
                  + ", ".join(f"{METRIC_LABELS.get(m, m)} {_f(cold['metrics'][m].get('spearman'), 2)}"
                              for m in cold.get("ranking") or []) + ".")
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
        if not fit.get("ok"):
            frows.append([res["series"][k], "-", "-", "-", "-", "-", "-", "-",
                          str(fit.get("error"))])
            continue
        ci = fit.get("ci") or {}

        def c(p: str, fit: dict[str, Any] = fit, ci: dict[str, Any] = ci) -> str:
            band = ci.get(p)
            return f"{fit[p]:.4g}" + (f" [{band[0]:.3g}, {band[1]:.3g}]" if band else " [no dof]")

        frows.append([res["series"][k], c("a"), c("b"), c("c"), _f(fit.get("rmse")),
                      _f(fit.get("gain_next_doubling")), _f(fit.get("x_flat")),
                      _f(fit.get("share_of_gain_reached"), 2), fit.get("note") or ""])
    if frows:
        doc.table(["quality", "a (asymptote) [95% CI]", "b [CI]", "c [CI]", "RMSE",
                   "gain of next doubling", "x where a doubling < 0.005",
                   "share of gain reached", "note"], frows)
    doc.img(png, f"scaling {res['axis']}")


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
    rows = []
    runs = sorted(p.parent for p in (study_dir / "encoders").glob("*/summary.json"))
    if runs:
        train_s = sum(json.loads((r / "summary.json").read_text()).get("seconds") or 0.0
                      for r in runs)
        rows.append(["encoder training runs (trainer summaries)", str(len(runs)), f"{train_s:.0f}"])
    for kind in ("encoder", "metrics", "ranker", "reference", "seq_len"):
        recs = study.store.all(kind)
        if recs:
            rows.append([f"{kind} points", str(len(recs)),
                         f"{sum(r.get('seconds') or 0.0 for r in recs):.0f}"])
    if rows:
        doc.h(2, "Cost")
        doc.p("Wall seconds as recorded (on a shared machine they include waiting for the "
              "CPU). An encoder point's time is its training run's when it ran the run in the "
              "same process, else the time to find it; the trainer summaries give the runs'.")
        doc.table(["what", "count", "seconds (sum)"], rows)
    md = out / "report.md"
    md.write_text(doc.markdown(out))
    page = out / "report.html"
    page.write_text(doc.html("MOON studies"))
    return {"markdown": str(md), "html": str(page), "figures": [str(f) for f in figures]}
