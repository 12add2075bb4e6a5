"""The model card (``README.md``) written into every artifact folder, from its config, labels and metrics."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["render_model_card", "write_model_card"]


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _epochs(config: dict) -> str:
    """The epochs really trained: a ``max_steps`` cap overrides the ``epochs`` setting, so count from the steps."""
    steps, per_epoch = config.get("steps"), config.get("steps_per_epoch")
    if config.get("max_steps") and steps and per_epoch:
        return f"{steps / per_epoch:g} ({steps} steps)"
    return str(config.get("epochs"))


def _stage2(record: dict) -> str:
    method = record.get("method")
    sampler = {"none": "real embeddings only", "smote": "real + SMOTE embeddings",
               "ismote": "real + ISMOTE embeddings"}.get(method, method)
    details = (f", +{record.get('synthetic_rows')} synthetic rows (label mode {record.get('label_mode')}, radius "
               f"{record.get('radius')}, k {record.get('k')})" if method != "none" else "")
    return f"{sampler}{details}, head epoch {record.get('best_epoch')} of {record.get('epochs')} chosen on dev"


def _calibration_lines(calibration: dict, config: dict) -> list[str]:
    """The card's calibration / adaptation section (``calibration.json`` and ``config.json``'s ``adaptation``)."""
    fitted = calibration.get("fitted_on", {})
    lines = ["", "## Calibration",
             f"Probabilities are calibrated per label ({calibration.get('method')} scaling fitted on "
             f"{fitted.get('data', 'dev')}, {fitted.get('rows', '?')} rows, {fitted.get('precision', '?')} outputs, "
             f"{fitted.get('date', '?')}): the mean probability over posts estimates an emotion's share. The "
             "thresholds above are on the raw sigmoid scale; the served ones are mapped through the same monotone "
             "map, so decisions do not change."]
    adaptation = config.get("adaptation")
    if adaptation:
        lines += ["", "## Adapted to a target stream",
                  f"Derived on {adaptation.get('date')} from `{adaptation.get('base_version')}` by "
                  "`emotion-monitor calibrate` (label-shift assumption: emotions look the same, their frequencies "
                  "differ)."]
        if adaptation.get("unlabelled"):
            u = adaptation["unlabelled"]
            lines.append(f"- unlabelled: {u.get('rows')} posts from `{u.get('file')}`; label priors estimated by "
                         f"{', '.join(u.get('estimated_priors', {}))}, `{adaptation.get('prior_method')}` used")
        if adaptation.get("labelled"):
            l_ = adaptation["labelled"]
            lines.append(f"- labelled: {l_.get('rows')} posts from `{l_.get('file')}`"
                         + (f" (label map `{l_['label_map']}`)" if l_.get("label_map") else "")
                         + f", thresholds re-tuned for {', '.join(l_.get('annotated_labels', []))} with the base as "
                         f"a prior of {l_.get('kappa')} pseudo-posts (cross-validated); "
                         f"positives: {l_.get('positives')}")
        priors = adaptation.get("label_priors", {})
        source = calibration.get("source_priors", {})
        lines += ["", "| label | dev prior | stream prior |", "| --- | ---: | ---: |"]
        lines += [f"| {k} | {source.get(k, float('nan')):.3f} | {v:.3f} |" for k, v in priors.items()]
    return lines


def render_model_card(config: dict, labels: list[str], metrics: dict, thresholds: dict[str, float],
                      calibration: dict | None = None, profiles: dict[str, dict] | None = None) -> str:
    """The artifact's README. ``profiles``: precision -> the contents of its ``thresholds_<precision>.json``."""
    profiles = profiles or {}
    lines = [f"# {config.get('name', 'emotion classifier')}", ""]
    if config.get("untrained"):
        lines += ["**Untrained test artifact** (random head): for software tests only, not for predictions.", ""]
    lines += [
        "Multi-label emotion classifier: a LoRA adapter on the base model plus a linear head over the "
        f"{config.get('pooling', 'mean')}-pooled sentence vector; sigmoid per label, one tuned threshold per label.",
        "",
        "## Intended use",
        "Tracking the emotions expressed in short English social-media posts about a brand, in aggregate "
        "(minute-by-minute shares). Not for judging individuals, clinical or hiring decisions.",
        "",
        "## Model",
        f"- base model: `{config.get('base_model')}` (weights not included; resolved at load time)",
        f"- pooling: {config.get('pooling')}, max length {config.get('max_length')} tokens (longer texts truncated)",
        f"- LoRA: r={config.get('lora_r')}, alpha={config.get('lora_alpha')}, dropout={config.get('lora_dropout')}, "
        f"targets `{config.get('lora_target_modules')}`",
        f"- labels ({len(labels)}): {', '.join(labels)}",
        "",
        "## Training",
        f"- data: {config.get('data_source', config.get('data'))} (taxonomy `{config.get('taxonomy')}`)",
        f"- loss: {config.get('loss')}" + (f" (gamma {config.get('focal_gamma')})" if config.get("loss") == "focal" else "")
        + f", label weights: {config.get('label_weights')}"
        + (f", label smoothing {config['label_smoothing']}" if config.get("label_smoothing") else ""),
        f"- undersampling of `{config.get('majority_label')}`: {config.get('undersample_ratio') or 'off'}"
        + (f" ({config['undersampling']})" if config.get("undersampling") else ""),
        "- stage-2 head re-training: " + (_stage2(config["stage2"]) if config.get("stage2") else "off"),
        f"- optimiser: AdamW, one-cycle lr {config.get('lr')}, batch {config.get('batch_size')}, "
        f"epochs {_epochs(config)}, seed {config.get('seed')}",
        f"- hardware / time: {config.get('hardware', '?')}, {config.get('train_seconds', '?')} s",
        f"- command: `{config.get('command', '?')}`",
    ] + ([f"- selection: {config['selection']}"] if config.get("selection") else []) + [
        "",
        "## Evaluation",
    ]
    if metrics:
        for split in ("dev", "test"):
            m = metrics.get(split)
            if isinstance(m, dict):
                lines.append(f"- {split}: macro-F1 {_fmt(m.get('macro_f1_tuned'))} (tuned thresholds), "
                             f"{_fmt(m.get('macro_f1_at_0.5'))} at 0.5; micro-F1 {_fmt(m.get('micro_f1_tuned'))}")
        for key in ("test_ekman", "test_sentiment"):
            if isinstance(metrics.get(key), dict):
                lines.append(f"- {key[5:]} grouping (test): macro-F1 {_fmt(metrics[key].get('macro_f1'))}")
        if metrics.get("stage1_test"):
            lines.append(f"- before stage 2 (test): {metrics['stage1_test']}")
        if isinstance(metrics.get("served_int8"), dict):
            s8 = metrics["served_int8"]
            lines.append(f"- test as the CPU worker serves it (int8, calls of {s8.get('call_size')}, "
                         f"`{s8.get('thresholds')}`): macro-F1 {_fmt(s8.get('test_macro_f1'))}, "
                         f"micro-F1 {_fmt(s8.get('test_micro_f1'))}")
        if "note" in metrics:
            lines.append(f"- {metrics['note']}")
    else:
        lines.append("- not evaluated")
    for precision, profile in profiles.items():
        scores = profile.get("dev_macro_f1", {})
        lines.append(f"- served in {precision}: thresholds tuned on dev with {precision} outputs in calls of "
                     f"{profile.get('call_size')} texts (`thresholds_{precision}.json`): dev macro-F1 "
                     f"{_fmt(scores.get('tuned'))}, vs {_fmt(scores.get('at_thresholds_json'))} at `thresholds.json`")
    lines += ["", "## Thresholds (tuned on dev)", "",
              "| label | threshold | " + "".join(f"{p} |" for p in profiles),
              "| --- | ---: |" + " ---: |" * len(profiles)]
    lines += [f"| {k} | {v:.2f} |" + "".join(f" {p['thresholds'][k]:.2f} |" if k in p.get("thresholds", {}) else " ? |"
                                             for p in profiles.values())
              for k, v in thresholds.items()]
    if calibration:
        lines += _calibration_lines(calibration, config)
    lines += ["", "## Limitations",
              "GoEmotions is Reddit English with masked names; rare emotions (grief, pride, relief, nervousness) have "
              "under 200 training examples and low F1. Sarcasm and context outside the text are not modelled. "
              "Labels come from raters' majority; the model inherits their biases.", ""]
    return "\n".join(lines)


def write_model_card(folder: str | Path) -> Path:
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    labels = json.loads((folder / "labels.json").read_text())
    thresholds = json.loads((folder / "thresholds.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").exists() else {}
    calibration = (json.loads((folder / "calibration.json").read_text())
                   if (folder / "calibration.json").exists() else None)
    profiles = {path.stem.removeprefix("thresholds_"): json.loads(path.read_text())
                for path in sorted(folder.glob("thresholds_*.json"))}
    card = folder / "README.md"
    card.write_text(render_model_card(config, labels, metrics, thresholds, calibration, profiles))
    return card
