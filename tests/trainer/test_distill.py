"""Distillation: extra-text reading drops labels; a student learns a fixed teacher's probabilities from its
outputs alone (alpha 0), on the training texts plus extra unlabelled texts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trainer.data import DataError
from trainer.distill import distill_texts, read_texts

LABELS = ["positive", "negative", "ambiguous", "neutral"]  # the 'sentiment' taxonomy


def test_read_texts_keeps_text_and_drops_label_columns(tmp_path):
    xed = tmp_path / "en-annotated.tsv"
    xed.write_text("I can't believe you did that!\t4, 7\n\n... And then 10 of them left .\t8\n", encoding="utf-8")
    neutral = tmp_path / "neu_en.txt"
    neutral.write_text("9\tYeah I was just telling him.\n9\tTwo pair 10s and sixes.\n", encoding="utf-8")
    jsonl = tmp_path / "posts.jsonl"
    jsonl.write_text('{"text": "great phone", "labels": ["joy"]}\n{"text": "  "}\n', encoding="utf-8")
    plain = tmp_path / "plain.txt"
    plain.write_text("just a line, 4\n", encoding="utf-8")
    assert read_texts(xed) == ["I can't believe you did that!", "... And then 10 of them left ."]
    assert read_texts(neutral) == ["Yeah I was just telling him.", "Two pair 10s and sixes."]
    assert read_texts(jsonl) == ["great phone"]
    assert read_texts(plain) == ["just a line, 4"]
    both = distill_texts(f"{xed},{neutral}", exclude=["Two pair 10s and sixes."], limit=None, seed=0)
    assert both == ["I can't believe you did that!", "... And then 10 of them left .", "Yeah I was just telling him."]
    sample = distill_texts(f"{xed},{neutral}", exclude=[], limit=2, seed=0)
    assert len(sample) == 2 and set(sample) <= set(both + ["Two pair 10s and sixes."])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "no"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2: .*\"text\""):
        read_texts(bad)
    with pytest.raises(DataError, match="not found"):
        read_texts(tmp_path / "missing.txt")


def test_extra_texts_reuse_the_cached_teacher_pass_over_the_training_texts(tmp_path, monkeypatch):
    """Adding extra texts to a distilled run used to re-label the training texts too (one cache over all texts: on
    CPU ~24 min of an MPNet teacher over GoEmotions' training texts); each part is now cached apart."""
    from trainer import make_untrained_artifact
    from trainer.artifact import ArtifactClassifier
    from trainer.distill import teacher_probabilities

    teacher = make_untrained_artifact(tmp_path / "teacher", labels=LABELS, seed=3, max_length=16)
    train_texts = [f"training text number {i}" for i in range(12)]
    extra = ["an extra unlabelled line", "and another one"]
    labelled: list[int] = []
    real = ArtifactClassifier.predict_proba
    monkeypatch.setattr(ArtifactClassifier, "predict_proba",
                        lambda self, texts, **kw: labelled.append(len(texts)) or real(self, texts, **kw))

    first, record = teacher_probabilities(teacher, train_texts, LABELS, cache_dir=tmp_path / "ckpt",
                                          progress=False)
    assert labelled == [12] and record["texts"] == 12 and record["texts_from_cache"] == 0
    both, record = teacher_probabilities(teacher, train_texts, LABELS, cache_dir=tmp_path / "ckpt",
                                         progress=False, extra=extra)
    assert labelled == [12, 2]  # only the extra texts went through the teacher
    assert record["texts"] == 14 and record["texts_from_cache"] == 12
    assert both.shape == (14, len(LABELS))
    np.testing.assert_array_equal(both[:12], first)
    uncached, _ = teacher_probabilities(teacher, extra, LABELS, progress=False)
    np.testing.assert_allclose(both[12:], uncached, atol=1e-6)
    calls = len(labelled)
    again, record = teacher_probabilities(teacher, train_texts, LABELS, cache_dir=tmp_path / "ckpt",
                                          progress=False, extra=extra)
    assert len(labelled) == calls and record["texts_from_cache"] == 14  # a resume labels nothing
    np.testing.assert_array_equal(again, both)


def test_an_asl_student_learns_an_asl_teachers_raw_outputs_and_a_bce_student_its_calibrated_ones(tmp_path):
    """The CPU student distilled from the asl MPNet teacher's calibrated probabilities reached 0.5213 dev macro-F1
    after stage 1, the same budget without a teacher 0.5468: the asl loss leaves raw negatives near 0.4, the
    calibrated targets pull every negative cell to ~0.02, and the two losses fight. ``auto`` now picks the raw
    outputs when teacher and student share the loss, calibrated ones otherwise; the cache holds raw outputs."""
    import json

    from trainer import load_classifier, make_untrained_artifact
    from trainer.calibration import write_calibration
    from trainer.distill import distill_target, teacher_probabilities

    teacher = make_untrained_artifact(tmp_path / "teacher", labels=LABELS, seed=5, max_length=16)
    config = json.loads((teacher / "config.json").read_text())
    (teacher / "config.json").write_text(json.dumps(config | {"loss": "asl"}))
    texts = [f"a calibration text {i} {'great' if i % 2 else 'awful'}" for i in range(40)]
    model = load_classifier(teacher, device="cpu")
    raw = model.predict_proba(texts, calibrated=False)
    y = (raw >= np.median(raw, axis=0)).astype(int)  # labels the raw outputs rank: a real, non-trivial Platt fit
    write_calibration(teacher, LABELS, raw, y, np.full(len(LABELS), 0.5), "test dev", "fp32")
    calibration = load_classifier(teacher, device="cpu").calibration
    assert calibration is not None

    assert distill_target(teacher, "asl") == "raw"
    assert distill_target(teacher, "bce") == "calibrated" and distill_target(teacher, "focal") == "calibrated"
    assert distill_target(teacher, "bce", "raw") == "raw" and distill_target(teacher, "asl", "calibrated") == "calibrated"

    got_raw, record = teacher_probabilities(teacher, texts, LABELS, cache_dir=tmp_path / "ckpt", progress=False,
                                            target="raw")
    assert record["target"] == "raw" and record["teacher_loss"] == "asl"
    np.testing.assert_allclose(got_raw, raw, atol=1e-6)
    got_cal, record = teacher_probabilities(teacher, texts, LABELS, cache_dir=tmp_path / "ckpt", progress=False,
                                            target="calibrated")
    assert record["target"] == "calibrated" and record["texts_from_cache"] == len(texts)  # one cache, both targets
    np.testing.assert_allclose(got_cal, calibration.apply(raw), atol=1e-6)
    assert np.abs(got_cal - got_raw).max() > 0.05  # the two targets really differ
    with pytest.raises(ValueError, match="raw or calibrated"):
        teacher_probabilities(teacher, texts, LABELS, target="auto")


@pytest.fixture(scope="module")
def sharp_teacher(goemotions_dir, tmp_path_factory):
    """A fixed teacher no student knows in advance: MiniLM + a head whose rows are the top principal directions of the
    base's sentence vectors (on GoEmotions train texts), scaled to logits of std 2.5, so its probabilities vary
    strongly with the text instead of sitting near 0.5."""
    from safetensors.torch import save_file

    from trainer import load_classifier, make_untrained_artifact
    from trainer.data import load_dataset_splits

    folder = make_untrained_artifact(tmp_path_factory.mktemp("teacher") / "teacher", labels=LABELS, seed=7,
                                     max_length=32)
    texts = load_dataset_splits(str(goemotions_dir), "sentiment").train.texts[-160:]
    vectors = load_classifier(folder, device="cpu").embed(texts).astype(np.float64)
    centre = vectors.mean(axis=0)
    _, _, directions = np.linalg.svd(vectors - centre, full_matrices=False)
    weight = directions[: len(LABELS)]
    weight = weight * (2.5 / ((vectors - centre) @ weight.T).std(axis=0))[:, None]
    save_file({"weight": torch.tensor(weight, dtype=torch.float32),
               "bias": torch.tensor(-(weight @ centre), dtype=torch.float32)}, str(folder / "head.safetensors"))
    return folder


def _agreement(student_proba: np.ndarray, teacher_proba: np.ndarray) -> float:
    """Mean over labels of the Pearson correlation between student and teacher probabilities across texts."""
    return float(np.mean([np.corrcoef(student_proba[:, j], teacher_proba[:, j])[0, 1]
                          for j in range(teacher_proba.shape[1])]))


# ~90 s of training on 2 cores: behind the slow marker CI runs
@pytest.mark.slow
def test_student_learns_a_fixed_teacher(goemotions_dir, sharp_teacher, tmp_path):
    from trainer import load_classifier
    from trainer.data import load_dataset_splits
    from trainer.settings import TrainerSettings
    from trainer.trainer import train

    data = load_dataset_splits(str(goemotions_dir), "sentiment")
    extra = tmp_path / "extra.tsv"  # XED-like: text + a label column that must be ignored
    extra.write_text("".join(f"{t}\t1, 5\n" for t in data.test.texts[-64:]), encoding="utf-8")
    settings = TrainerSettings(data=str(goemotions_dir), taxonomy="sentiment", train_limit=64, eval_limit=16,
                               max_steps=16, batch_size=16, lr=3e-3, max_length=32, threads=2, log_every=6,
                               checkpoint_every=1000, output=str(tmp_path / "student"), eval_batch_size=64,
                               teacher=str(sharp_teacher), distill_alpha=0.0, distill_temperature=1.0,
                               distill_texts=str(extra), label_weights="none")
    result = train(settings, progress=False)
    record = json.loads((result.path / "config.json").read_text())["distillation"]
    assert record["labelled_texts"] == 64 and record["extra_texts"] == 64 and record["alpha"] == 0.0
    assert not (tmp_path / "student.checkpoint").exists()  # the cached teacher probabilities went with it

    held_out = data.dev.texts[-64:]  # not among the student's training, extra or the teacher's fitting texts
    teacher_model = load_classifier(sharp_teacher, device="cpu")
    teacher = teacher_model.predict_proba(held_out)
    assert teacher.std(axis=0).min() > 0.05  # the teacher really varies with the text
    # the head's own outputs: what distillation fits to the teacher's probabilities (the student's Platt calibration,
    # fitted afterwards on 16 dev rows' gold labels, maps them onto another scale)
    student = load_classifier(result.path, device="cpu").predict_proba(held_out, calibrated=False)
    # an untrained student: the bare base (a fresh LoRA adapter is the identity) and a fresh random head
    torch.manual_seed(3)
    head = torch.nn.Linear(teacher_model.model.head.in_features, len(LABELS))
    with torch.no_grad():
        untrained = torch.sigmoid(head(torch.from_numpy(teacher_model.embed(held_out)))).numpy()
    learned, before = _agreement(student, teacher), _agreement(untrained, teacher)
    # closer to the teacher than chance: the best constant (the teacher's own mean per label), a shuffled teacher
    error = np.abs(student - teacher).mean()
    constant = np.abs(teacher.mean(axis=0) - teacher).mean()
    shuffled = np.abs(teacher[np.random.default_rng(0).permutation(len(teacher))] - teacher).mean()
    figures = {"learned": learned, "untrained": before, "error": error, "constant": constant, "shuffled": shuffled}
    assert learned > 0.5 and learned > before + 0.3, figures
    assert error < constant and error < shuffled, figures


def test_teacher_with_other_labels_is_refused(goemotions_dir, sharp_teacher, tmp_path):
    from trainer.settings import TrainerSettings
    from trainer.trainer import train

    settings = TrainerSettings(data=str(goemotions_dir), taxonomy="ekman", train_limit=32, eval_limit=16,
                               max_steps=1, batch_size=16, max_length=16, threads=2, teacher=str(sharp_teacher),
                               output=str(tmp_path / "s"))
    with pytest.raises(ValueError, match="same taxonomy"):
        train(settings, progress=False)
    with pytest.raises(ValueError, match="needs a teacher"):
        train(settings.model_copy(update={"teacher": None, "distill_texts": str(tmp_path / "x.txt")}),
              progress=False)


def test_distillation_loss_pulls_only_toward_the_teacher_on_unlabelled_rows():
    from trainer.losses import BCELoss, DistillationLoss

    kd = DistillationLoss(BCELoss(), alpha=0.5, temperature=1.0)
    logits = torch.zeros((2, 1), requires_grad=True)
    # row 0 labelled 1 and teacher 0.9; row 1 unlabelled, its (zero) target must be ignored, teacher 0.9
    kd(logits, torch.tensor([[1.0], [0.0]]), torch.tensor([[0.9], [0.9]]), torch.tensor([True, False])).backward()
    assert logits.grad[1, 0] < 0  # pushed up toward the teacher, not down toward the placeholder target 0


def test_a_distilled_run_refuses_a_checkpoint_that_learnt_from_another_teacher(tmp_path):
    """Resuming `bench/train_student.sh` with another TEACHER used to continue from the checkpoint and mix two
    teachers' probabilities; the checkpoint now records the teacher's version and a resume checks it first."""
    from trainer.trainer import _resume, _Stage1

    labels = ["positive", "negative"]
    (tmp_path / "ckpt").mkdir()
    torch.save({"total_steps": 10, "labels": labels, "teacher": "emotion-mpnet-lora-aaaa"},
               tmp_path / "ckpt" / "state.pt")
    run = _Stage1(total_steps=10, steps_per_epoch=5, teacher="emotion-mpnet-lora-bbbb")
    with pytest.raises(RuntimeError, match="learnt from teacher emotion-mpnet-lora-aaaa, this run from "
                                           "emotion-mpnet-lora-bbbb"):
        _resume(tmp_path / "ckpt", run, labels, None, None, None, "cpu")
    plain = _Stage1(total_steps=10, steps_per_epoch=5)  # no distillation: a teacher's checkpoint is refused too
    with pytest.raises(RuntimeError, match="this run from None"):
        _resume(tmp_path / "ckpt", plain, labels, None, None, None, "cpu")
