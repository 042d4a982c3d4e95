"""Evaluators: what runs on the validation split, chosen by `eval.evaluators` (see base.py)."""

from jaxtrain.evaluators.base import (EvalContext, Evaluator, EvaluatorConfig, build_evaluators, evaluator_names,
                                      register_evaluator, run_evaluators)

__all__ = ["EvalContext", "Evaluator", "EvaluatorConfig", "build_evaluators", "evaluator_names",
           "register_evaluator", "run_evaluators"]
