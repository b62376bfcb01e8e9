"""Studies: the exchange rate of intermediate metrics against ranker AUC (with bootstrap
intervals and the best guide), and scaling laws (training pairs, negatives,
behaviour-sequence length), with plots and a report; ``make study`` runs them all."""

from moon_rec._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "Study": "moon_rec.studies.runs",
    "StudyConfig": "moon_rec.studies.config",
    "analyse_axis": "moon_rec.studies.scaling",
    "analyse_exchange": "moon_rec.studies.exchange",
    "build_report": "moon_rec.studies.report",
    "encoder_versions": "moon_rec.studies.runs",
    "fit_power_law": "moon_rec.studies.scaling",
    "load_study_config": "moon_rec.studies.config",
    "metric_info": "moon_rec.studies.config",
    "run_exchange_study": "moon_rec.studies.exchange",
    "run_scaling_study": "moon_rec.studies.scaling",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
