"""Click commands ``train``, ``evaluate``, ``classify``, ``ablation``, ``calibrate``, ``tune-thresholds`` (mounted by
``emotion_monitor.cli``).

``train`` gets one ``--<field>`` option per ``TrainerSettings`` field (env ``EM_TRAIN_<FIELD>`` also works;
a flag wins over the env var), so every switch is reachable and recorded in the artifact's ``config.json``.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

import click
from pydantic import ValidationError

from .settings import TrainerSettings

__all__ = ["train", "evaluate", "classify", "ablation", "calibrate", "tune_thresholds"]


def _settings_options(func):
    for name, field in reversed(list(TrainerSettings.model_fields.items())):
        flag = "--" + name.replace("_", "-")
        func = click.option(flag, name, default=None, help=field.description, metavar="VALUE")(func)
    return func


def _build_settings(overrides: dict) -> TrainerSettings:
    clean = {}
    for key, value in overrides.items():
        if value is None:
            continue
        clean[key] = None if isinstance(value, str) and value.lower() in ("none", "null") else value
    try:
        return TrainerSettings(**clean)
    except ValidationError as exc:
        raise click.UsageError(f"invalid training settings:\n{exc}") from None


def _setup_logging(verbose: bool = True) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


@click.command("train")
@click.option("--stage2-from", "stage2_from", type=click.Path(exists=True, file_okay=False), default=None,
              help="Skip stage 1: take this trained artifact, retrain its head on real + ISMOTE embeddings "
                   "(the --ismote-*/--stage2-* settings), write the result to --output.")
@click.option("--stage2-method", type=click.Choice(["ismote", "smote", "none"]), default="ismote", show_default=True,
              help="With --stage2-from: oversampler for the head re-training (none: real embeddings only).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_settings_options
def train(stage2_from: str | None, stage2_method: str, quiet: bool, **overrides) -> None:
    """Fine-tune a LoRA multi-label emotion classifier and write a model artifact."""
    from .data import DataError

    _setup_logging()
    settings = _build_settings(overrides)
    command = "emotion-monitor " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        if stage2_from:
            from .stage2 import stage2_from_artifact

            result = stage2_from_artifact(stage2_from, settings, progress=not quiet, command=command,
                                          method=stage2_method)
        else:
            from .trainer import train as run_training

            result = run_training(settings, progress=not quiet, command=command)
    except DataError as exc:  # unusable or unreachable data: the message says which and what to do, no traceback
        raise click.ClickException(str(exc)) from None
    test = result.metrics["test"]
    click.echo(json.dumps({"artifact": str(result.path), "test_macro_f1_tuned": round(test["macro_f1_tuned"], 4),
                           "test_macro_f1_at_0.5": round(test["macro_f1_at_0.5"], 4),
                           "test_micro_f1_tuned": round(test["micro_f1_tuned"], 4)}))


@click.command("evaluate")
@click.option("--model", "model_path", type=click.Path(file_okay=False), default=None,
              help="Artifact folder (default: the shipped model).")
@click.option("--data", default=None, help="Dataset (default: EM_TRAIN_DATA / the GoEmotions folder).")
@click.option("--taxonomy", default=None, help="Label set of the model (default: the model's own).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/eval", show_default=True,
              help="Folder for report.md, report.json and per_label_f1.png.")
@click.option("--eval-limit", type=int, default=None, help="Only the first N dev and test rows.")
@click.option("--batch-size", type=int, default=None, help="Prediction batch size.")
@click.option("--labelled", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Instead of a dataset: a labelled JSONL file (text + labels), scored at the stored thresholds on "
                   "the labels it covers; writes report.json to --out.")
@click.option("--label-map", default=None,
              help="With --labelled: its taxonomy's map (a TOML file, or plutchik8 / ekman6).")
@click.option("--retune-thresholds", is_flag=True,
              help="Re-tune the per-label thresholds on the (limited) dev rows instead of using the artifact's stored "
                   "ones (what classify and the worker apply).")
@click.option("--int8", is_flag=True,
              help="As the CPU worker serves it: int8 backbone, the artifact's thresholds_int8.json when it has one, "
                   "model calls of 32 texts (--batch-size overrides).")
def evaluate(model_path, data, taxonomy, out_dir, eval_limit, batch_size, labelled, label_map,
             retune_thresholds, int8) -> None:
    """Evaluate a model artifact: per-label P/R/F1 on test at its stored thresholds (or re-tuned on dev), groupings,
    PNG."""
    _setup_logging()
    from .data import DataError
    from .evaluate import evaluate_artifact, evaluate_labelled_file

    if label_map and not labelled:
        raise click.UsageError("--label-map applies to --labelled")
    if labelled:
        try:
            report = evaluate_labelled_file(model_path, labelled, label_map, batch_size, int8=int8)
        except DataError as exc:
            raise click.ClickException(str(exc)) from None
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
        click.echo(json.dumps(report["summary"]))
        return

    try:
        report = evaluate_artifact(model_path, data=data, taxonomy=taxonomy, out_dir=out_dir, eval_limit=eval_limit,
                                   batch_size=batch_size, retune_thresholds=retune_thresholds, int8=int8)
    except DataError as exc:  # e.g. no ../shared and the Hub unreachable: the message says what to do
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({k: report["summary"][k] for k in sorted(report["summary"])}))


@click.command("classify")
@click.option("--model", "model_path", type=click.Path(file_okay=False), default=None,
              help="Artifact folder (default: the shipped model).")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Texts per model call.")
@click.option("--top-k", type=int, default=None, help="Also cap the returned labels at the k most probable.")
@click.option("--all-scores/--no-all-scores", default=True, show_default=True, help="Write every label's score.")
@click.argument("input_file", type=click.File("r", encoding="utf-8"), default="-")
def classify(model_path, batch_size, top_k, all_scores, input_file) -> None:
    """Classify texts (JSONL with a "text" field, or plain lines) from INPUT_FILE or stdin into JSONL on stdout.

    A bad line (empty, invalid JSON, no "text") is reported on stderr with its line number; the rest continue.
    """
    _setup_logging(verbose=False)  # stderr carries only the bad-line reports
    from .classify import classify_stream

    errors = classify_stream(input_file, sys.stdout, model_path, batch_size=batch_size, top_k=top_k,
                             all_scores=all_scores, err=sys.stderr)
    if errors:
        click.echo(f"{errors} line(s) skipped (see above)", err=True)


@click.command("ablation")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="bench/results", show_default=True)
@click.option("--train-limit", type=int, default=8000, show_default=True, help="Fixed training subset (rows).")
@click.option("--steps", type=int, default=300, show_default=True, help="Stage-1 optimiser steps per row.")
@click.option("--eval-limit", type=int, default=None, help="Only the first N dev/test rows (default: all).")
@click.option("--rows", default=None,
              help="Comma-separated subset of rows to run (default: all; see trainer.ablation.ROWS).")
@click.option("--threads", type=int, default=2, show_default=True)
def ablation(out_dir, train_limit, steps, eval_limit, rows, threads) -> None:
    """Imbalance/loss ablation (BCE; +undersampling; +loss weights; +focal; +asl; +label smoothing; stage 2; all) on
    one seed and budget."""
    _setup_logging()
    from .ablation import run_ablation

    result = run_ablation(Path(out_dir), train_limit=train_limit, steps=steps, eval_limit=eval_limit,
                          rows=rows.split(",") if rows else None, threads=threads)
    click.echo(result["markdown"])


@click.command("calibrate")
@click.option("--model", "model_path", type=click.Path(exists=True, file_okay=False), default=None,
              help="Base artifact folder (default: the shipped model).")
@click.option("--unlabelled", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Texts of the target stream (JSONL with 'text', or plain lines): estimate its label priors and "
                   "adapt probabilities and thresholds to them.")
@click.option("--labelled", type=click.Path(exists=True, dir_okay=False), default=None,
              help="In-domain posts, JSONL with 'text' and 'labels': re-tune thresholds and priors of the annotated "
                   "labels, with the base as the prior.")
@click.option("--annotated-labels", default=None,
              help="Comma-separated model labels the --labelled file was annotated for (a post listing none of them "
                   "is a negative for each); default: the label map's targets, else every label the file uses.")
@click.option("--label-map", default=None,
              help="Taxonomy map for --labelled (a TOML file, or a bundled one: plutchik8, ekman6).")
@click.option("--prior-method", type=click.Choice(["em", "acc"]), default="acc", show_default=True,
              help="Prior estimate the artifact uses for --unlabelled (both are recorded): acc = adjusted "
                   "classify-and-count (binary BBSE), em = EM/SLD on calibrated posteriors.")
@click.option("--kappa", type=float, default=None,
              help="Weight of the base, in pseudo-posts, when re-tuning thresholds on --labelled (default: chosen by "
                   "5-fold cross-validation on the labelled posts).")
@click.option("--dev-data", default=None,
              help="Re-fit the probability calibration on this dataset's dev split first (GoEmotions layout); "
                   "needed when the base has no calibration.json.")
@click.option("--fp32", is_flag=True, help="Score posts in fp32 instead of int8 (the CPU worker's default).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for the derived artifact (new or empty; --out equal to --model only adds calibration).")
def calibrate(model_path, unlabelled, labelled, annotated_labels, label_map, prior_method, kappa, dev_data, fp32,
              out_dir) -> None:
    """Write an artifact adapted to a target stream (loads like any other in classify, evaluate and the worker)."""
    _setup_logging(verbose=False)
    from .calibrate import calibrate_artifact
    from .data import DataError

    if label_map and not labelled:
        raise click.UsageError("--label-map applies to --labelled")
    if annotated_labels and not labelled:
        raise click.UsageError("--annotated-labels applies to --labelled")
    try:
        record = calibrate_artifact(model_path, out_dir, unlabelled=unlabelled, labelled=labelled,
                                    annotated_labels=[a.strip() for a in annotated_labels.split(",") if a.strip()]
                                    if annotated_labels else None,
                                    label_map=label_map, prior_method=prior_method,
                                    kappa=kappa, dev_data=dev_data,
                                    int8=not fp32)
    except (DataError, FileExistsError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"artifact": out_dir, **{k: v for k, v in record.items() if k != "label_priors"}},
                          default=str))


@click.command("tune-thresholds")
@click.option("--model", "model_path", type=click.Path(exists=True, file_okay=False), required=True,
              help="Artifact folder to add the thresholds to (written in place).")
@click.option("--precision", type=click.Choice(["int8", "bf16"]), default="int8", show_default=True,
              help="Arithmetic the model is served in: int8 = the CPU worker's default, bf16 = on a GPU (needs CUDA).")
@click.option("--data", default=None, help="Dataset whose dev split tunes them (default: the model's / GoEmotions).")
@click.option("--call-size", type=int, default=32, show_default=True,
              help="Texts per model call, as the worker calls it (its int8 default on CPU; EM_MONITOR_INFERENCE_BATCH "
                   "overrides it there). int8 activation scales are per call.")
def tune_thresholds(model_path, precision, data, call_size) -> None:
    """Tune per-label thresholds on dev with the outputs of the precision the model is served in and write
    thresholds_<precision>.json into the artifact (load_classifier serves them in that precision)."""
    _setup_logging(verbose=False)
    from .data import DataError
    from .precision_thresholds import profile_path
    from .tune_thresholds import fit_precision_thresholds

    try:
        record = fit_precision_thresholds(model_path, precision, data, call_size, progress=True)
    except (DataError, RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"written": str(profile_path(model_path, precision)), "precision": precision,
                           "call_size": call_size, "dev_macro_f1": record["dev_macro_f1"]}))
