"""The single entry point, ``emotion-monitor``, with one subcommand per job.

Each component owns its subcommands in its own ``cli`` module; they are imported only when called, so
``emotion-monitor --help`` stays fast and a worker never imports the dashboard (or the trainer's training code).
"""

from __future__ import annotations

import importlib

import click

# subcommand -> "module:attribute" of a click.Command
SUBCOMMANDS: dict[str, str] = {
    "train": "trainer.cli:train",
    "evaluate": "trainer.cli:evaluate",
    "classify": "trainer.cli:classify",
    "ablation": "trainer.cli:ablation",
    "calibrate": "trainer.cli:calibrate",
    "tune-thresholds": "trainer.cli:tune_thresholds",
    "worker": "monitor.cli:worker",
    "replay": "monitor.cli:replay",
    "brands": "monitor.brands_cli:brands",
    "alerts": "monitor.alerts_cli:alerts",
    "produce": "emotion_monitor.produce:produce",
    "dashboard": "dashboard.cli:dashboard",
    "up": "emotion_monitor.up:up",
    "source": "emotion_monitor.sources.cli:source",
}

_HELP: dict[str, str] = {
    "train": "Fine-tune a LoRA multi-label emotion classifier and write a model artifact.",
    "evaluate": "Evaluate a model artifact per emotion, with tuned thresholds and groupings.",
    "classify": "Classify texts (JSONL or plain lines) from a file or stdin into JSONL.",
    "ablation": "Run the imbalance-technique ablation on one seed and budget.",
    "calibrate": "Adapt a model artifact to a stream: label priors (unlabelled posts), thresholds (labelled posts).",
    "tune-thresholds": "Tune a model's thresholds for the precision it is served in (int8 on CPU, bf16 on GPU).",
    "worker": "Run the Faust stream processor: Kafka posts -> Redis TimeSeries, alerts.",
    "replay": "Replay/backfill a topic (fill or recompute) without double counting.",
    "alerts": "Alert rules per brand x emotion: list, set, delete (stored in Redis, live in workers).",
    "brands": "Brand queries: import/export YAML, list, add, remove, test which brands a text matches.",
    "produce": "Send your own posts (JSONL or CSV) to the posts topic.",
    "dashboard": "Run the Streamlit brand-mood dashboard.",
    "up": "Start the whole product locally: broker, Redis, worker, demo source, dashboard.",
    "source": "Run a live post source (bluesky, mastodon, jsonl) into the posts topic, resumable.",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attribute)
        except (ImportError, AttributeError) as exc:
            raise click.ClickException(f"subcommand {name!r} is not available: {exc}") from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, _HELP.get(name, "")) for name in self.list_commands(ctx)])


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="emotion-monitor")
def main() -> None:
    """emotion-monitor: how people feel about a brand, minute by minute (27 GoEmotions emotions + neutral)."""
    from monitor.redact import install_log_redaction

    install_log_redaction()  # no password or token in any log line of any subcommand


if __name__ == "__main__":  # pragma: no cover
    main()
