"""The model card says how the model was really trained (a pure function of the artifact's records)."""

from trainer.model_card import render_model_card


def _card(**config) -> str:
    base = {"name": "m", "loss": "bce", "label_weights": "sqrt_inverse", "epochs": 1.5, "seed": 42}
    return render_model_card(base | config, ["joy"], {}, {"joy": 0.5})


def test_a_step_cap_shows_the_epochs_really_trained():
    """Stop 11's shipped model was trained with max_steps=2084 (1,042 steps per epoch) under an epochs setting of
    1.5 that the cap overrode; the card said "epochs 1.5"."""
    assert "epochs 2 (2084 steps)" in _card(max_steps=2084, steps=2084, steps_per_epoch=1042)
    assert "epochs 1.5," in _card(steps=1563, steps_per_epoch=1042)  # no cap: the setting is what ran


def test_label_smoothing_is_named_with_the_loss():
    assert "- loss: bce, label weights: sqrt_inverse, label smoothing 0.1" in _card(label_smoothing=0.1)
    assert "label smoothing" not in _card(label_smoothing=0.0)


def test_a_precision_profile_is_named_with_its_dev_score_and_thresholds():
    profile = {"call_size": 32, "dev_macro_f1": {"tuned": 0.5505, "at_thresholds_json": 0.5348},
               "thresholds": {"joy": 0.61}}
    card = render_model_card({"name": "m"}, ["joy"], {}, {"joy": 0.5}, profiles={"int8": profile})
    assert ("- served in int8: thresholds tuned on dev with int8 outputs in calls of 32 texts "
            "(`thresholds_int8.json`): dev macro-F1 0.550, vs 0.535 at `thresholds.json`") in card
    assert "| label | threshold | int8 |" in card and "| joy | 0.50 | 0.61 |" in card
    assert "int8" not in render_model_card({"name": "m"}, ["joy"], {}, {"joy": 0.5})


def test_the_served_int8_figure_is_on_the_card():
    metrics = {"served_int8": {"test_macro_f1": 0.52, "test_micro_f1": 0.5891, "call_size": 32,
                               "thresholds": "thresholds_int8.json"}}
    card = render_model_card({"name": "m"}, ["joy"], metrics, {"joy": 0.5})
    assert ("- test as the CPU worker serves it (int8, calls of 32, `thresholds_int8.json`): macro-F1 0.520, "
            "micro-F1 0.589") in card
