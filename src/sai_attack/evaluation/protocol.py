"""What the evaluation measures, in words and columns, shared by its computing and reporting."""

from __future__ import annotations

from sai_attack.report import wilson_interval
from sai_attack.runs import Run

PROTOCOL = {
    "success_rate": "for every (run, model, defense): successes / n, where n is the number of the "
    "run's images whose clean version (RUN_DIR/clean/<stem>.png), after the defense, the model "
    "classifies correctly (prediction == label); n is reported next to every rate",
    "success": "untargeted runs: the model's prediction on the defended adversarial image "
    "(RUN_DIR/images/<stem>.png, the saved 8-bit PNG) differs from the label; targeted runs: it "
    "equals the target class",
    "label": "the label column of results.csv (ground truth); where it is empty (a run without "
    "labels), the attack model's clean prediction (clean_pred), i.e. the class the attack "
    "attacked, so that for another model 'correct' means 'agrees with the attacked model'",
    "settings": "white-box: the attack's own model without defense; black-box: another model "
    "without defense; gray-box: any defense (unknown to the attacker)",
    "defenses": "applied in pixel space to the decoded 8-bit images at their saved size, before "
    "the model's own resizing and normalisation, identically to the clean and the adversarial "
    "image; randomised defenses (tvm) use one seed per image, derived from the image name and "
    "--seed, for both",
    "images": "rows of results.csv with status ok whose images/ and clean/ files exist",
    "interval": "ci_low and ci_high bound the 95% Wilson score interval of success_rate "
    "(successes of n); unknown when n = 0",
}
"""The protocol, written into ``evaluation.json`` and ``evaluation.md``."""

RESULT_COLUMNS = (
    "run", "method", "delta", "delta_eff", "model", "defense", "param", "spec", "setting", "n",
    "successes", "success_rate", "images", "clean_accuracy", "attack_model", "targeted",
    "labels", "ci_low", "ci_high",
)  # fmt: skip
"""The columns of ``evaluation.csv``: one row per (run, model, defense)."""

PREDICTION_COLUMNS = (
    "run", "image", "model", "defense", "label", "target", "clean_pred", "adv_pred",
    "clean_correct", "success",
)  # fmt: skip
"""The columns of ``predictions.csv``: one row per (run, image, model, defense)."""


class EvaluationError(ValueError):
    """Runs cannot be evaluated as asked (no model to evaluate on, a run without its model)."""


def method_of(run: Run) -> str:
    """The run's attack method, ``unknown`` when its record does not say."""
    return run.method or "unknown"


def success_interval(row: dict) -> tuple[float, float]:
    """The 95% Wilson interval of a result row's success rate (NaN, NaN when its n is 0)."""
    return wilson_interval(row["successes"], row["n"])


def with_interval(row: dict) -> dict:
    """A result row with its ``ci_low`` and ``ci_high`` (the rows are computed without them)."""
    low, high = success_interval(row)
    return {**row, "ci_low": low, "ci_high": high}
