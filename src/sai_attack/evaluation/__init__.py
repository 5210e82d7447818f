"""Success of saved adversarial examples under models x defenses: the engine of ``evaluate``.

Dong et al. (CVPR 2020) measure attack ability (Sec. 4.1, Table 1: white-box and black-box success
rates) and robustness to image-processing defenses (Sec. 4.2, Table 3 and Figures 4-6: gray-box
success rates). This package measures both on run folders written by ``sai-attack attack`` (read
with :func:`sai_attack.runs.read_runs`):

* every (run, model, defense) gets a success rate over the images whose *clean* version, after the
  same defense, the model classifies correctly; that count ``n`` is reported next to every rate
  (the paper keeps "robust images which can be classified correctly after image processing");
* success is measured on the saved 8-bit PNG ``images/<stem>.png`` (never on float tensors):
  untargeted runs succeed when the prediction differs from the label, targeted runs when it
  equals the target;
* randomised defenses (TVM) are seeded per image from the image name, so results are
  deterministic and independent of the batch size.

Modules: :mod:`~sai_attack.evaluation.targets` (the models), :mod:`~sai_attack.evaluation.compute`
(the evaluation loop), :mod:`~sai_attack.evaluation.tables` (``evaluation.md``) and
:mod:`~sai_attack.evaluation.report` (:func:`write_evaluation`: ``evaluation.csv`` (tidy rows),
``evaluation.json``, ``evaluation.md``, ``predictions.csv`` (one row per image, model and defense)
and ``plots/*.png`` (success rate against the parameter of every swept defense, one line per run,
like Figures 4-6)).
"""

from sai_attack.evaluation.compute import Evaluation, evaluate, evaluate_folders
from sai_attack.evaluation.protocol import (
    PREDICTION_COLUMNS,
    PROTOCOL,
    RESULT_COLUMNS,
    EvaluationError,
)
from sai_attack.evaluation.report import (
    describe_run,
    predictions_csv,
    results_csv,
    results_json,
    sweep_plot,
    write_evaluation,
)
from sai_attack.evaluation.tables import (
    POOLING,
    attack_ability_table,
    defense_table,
    plot_name,
    pooling_table,
    results_markdown,
    sweep_table,
)
from sai_attack.evaluation.targets import Target, load_targets

__all__ = [
    "POOLING",
    "PREDICTION_COLUMNS",
    "PROTOCOL",
    "RESULT_COLUMNS",
    "Evaluation",
    "EvaluationError",
    "Target",
    "attack_ability_table",
    "defense_table",
    "describe_run",
    "evaluate",
    "evaluate_folders",
    "load_targets",
    "plot_name",
    "pooling_table",
    "predictions_csv",
    "results_csv",
    "results_json",
    "results_markdown",
    "sweep_plot",
    "sweep_table",
    "write_evaluation",
]
