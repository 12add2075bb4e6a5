"""Report a teacher (or any) training run that ``bench/train_teacher.sh`` trained across pauses (issue 14): its dev and
test macro-F1 from the artifact's ``metrics.json`` and its speed from the training log, written to JSON.

Why from the log: a run trained across sessions with pauses (SIGSTOP, checkpoint/resume) has a ``stage1_seconds``
that includes the time it shared the machine or sat paused; the log's ``step N/M`` lines, 10 steps apart, give the
seconds per step of each stretch it actually ran. Gaps longer than ``--max-gap`` seconds between two lines (a pause,
a resume's restart) are left out; the median of the rest is the figure, with its quartiles.

    python bench/teacher_report.py --run ~/.cache/emotion-monitor/runs/mpnet-teacher-asl-stage1 \\
        --log ~/.cache/emotion-monitor/runs/mpnet-teacher-asl-stage1.log --out bench/results/mpnet_teacher_asl_cpu.json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from datetime import datetime
from pathlib import Path

_STEP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ INFO step (\d+)/(\d+) ")


def seconds_per_step(log_lines: list[str], max_gap: float) -> list[float]:
    """Seconds per step between consecutive ``step`` lines of one stretch (the step count rose, the gap is short)."""
    rates, previous = [], None
    for line in log_lines:
        match = _STEP.match(line)
        if not match:
            previous = None  # a marker line (start/resume) ends a stretch
            continue
        at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
        step = int(match.group(2))
        if previous is not None and step > previous[1]:
            elapsed = (at - previous[0]).total_seconds()
            if elapsed <= max_gap:
                rates.append(elapsed / (step - previous[1]))
        previous = (at, step)
    return rates


def _round4(value):
    return round(value, 4) if isinstance(value, float) else value


def _rounded(split: dict) -> dict:
    return {key: round(split[key], 4) for key in ("macro_f1_at_0.5", "macro_f1_tuned", "micro_f1_at_0.5",
                                                   "micro_f1_tuned")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="The trained artifact folder (config.json, metrics.json)")
    parser.add_argument("--log", required=True, help="The training log with 'step N/M' lines")
    parser.add_argument("--out", required=True, help="JSON to write")
    parser.add_argument("--command", default="bench/train_teacher.sh", help="What trained it, for the record")
    parser.add_argument("--max-gap", type=float, default=120.0, help="Longer gaps between step lines are pauses")
    args = parser.parse_args()

    run = Path(args.run).expanduser()
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    rates = seconds_per_step(Path(args.log).expanduser().read_text().splitlines(), args.max_gap)
    if not rates:
        raise SystemExit(f"no 'step N/M' stretches in {args.log}")
    quartiles = statistics.quantiles(rates, n=4)
    per_step = statistics.median(rates)
    report = {
        "what": (f"{config['base_model']} + LoRA r{config['lora_r']} {config['lora_target_modules']}, "
                 f"{config['pooling']} pooling, loss {config['loss']}, {config['label_weights']} weights, "
                 f"undersample {config['undersample_ratio']}x, lr {config['lr']}, "
                 f"{config['steps'] / config['steps_per_epoch']:g} epochs ({config['steps']} steps), "
                 f"seed {config['seed']}, batch {config['batch_size']}"),
        "command": args.command, "run": str(run),
        "hardware": config["hardware"], "steps": config["steps"], "steps_per_epoch": config["steps_per_epoch"],
        "seconds_per_step_median": round(per_step, 2),
        "seconds_per_step_quartiles": [round(q, 2) for q in quartiles],
        "seconds_per_epoch_from_median": round(per_step * config["steps_per_epoch"], 1),
        "step_intervals_measured": len(rates),
        "stage1_seconds_recorded": config.get("stage1_seconds"),
        "dev": _rounded(metrics["dev"]), "test": _rounded(metrics["test"]),
        # a stage-2 artifact (head re-trained on the frozen encoder's real embeddings) keeps its stage-1 test figure
        "stage1_test_macro_f1_tuned": _round4(metrics.get("stage1_test", {}).get("macro_f1_tuned")),
        "stage2": ({key: _round4(config["stage2"].get(key)) for key in ("method", "epochs", "best_epoch",
                                                                "best_dev_macro_f1", "seconds")}
                   if config.get("stage2") else None),
        "distillation": ({key: config["distillation"].get(key) for key in (
            "teacher_version", "teacher_base_model", "target", "alpha", "temperature", "extra_texts")}
            if config.get("distillation") else None),
        "note": (f"seconds per step: median over {len(rates)} log intervals of 10 steps, pauses over "
                 f"{args.max_gap:g} s left out; stage1_seconds_recorded includes time shared with other jobs"),
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"dev {report['dev']['macro_f1_tuned']}  test {report['test']['macro_f1_tuned']}  "
          f"{per_step:.2f} s/step ({report['seconds_per_epoch_from_median']:.0f} s/epoch)  -> {args.out}")


if __name__ == "__main__":
    main()
