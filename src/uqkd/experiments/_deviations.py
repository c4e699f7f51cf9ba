"""Differences between uqkd's ``paper`` profiles and the published scripts shared by several experiments.

Each experiment lists its own in ``Experiment.deviations``; the entries here are reused by several
experiments (the report shows them per experiment and in one table). The published scripts are not
available to us: what they do is taken from /work/shared/PAPER.md, and a setting it does not
record is said to be "not recorded in PAPER.md".
"""

from __future__ import annotations

from .base import Deviation

__all__ = [
    "TABULAR_SPLIT",
    "CLASSIFICATION_SPLIT",
    "TABULAR_VA_METHODS",
    "MLP_COMMON_RANDOM_NUMBERS",
    "BEYOND_THE_PAPER",
    "LLM_MODELS",
    "LLM_QUESTIONS",
    "LLM_PROMPT",
    "LLM_ANSWER_LENGTH",
    "LLM_SETTING",
]

#: every experiment whose paper profile reads the Boston data
TABULAR_SPLIT = Deviation(
    setting="train/test split and standardisation (Boston)",
    published="sklearn train_test_split, 80/20, random_state 42 or 1 depending on the script (random_state per "
              "script not recorded in PAPER.md); features and target mostly standardised on the full data",
    uqkd="80/20 split by a permutation of the rows seeded by the run's seed; features and target standardised "
         "with the training set's statistics",
    why="the scripts are not available to us, so their exact split cannot be reproduced; training-set "
        "statistics keep the test rows out of the preprocessing",
)

#: the classification experiments (section 6)
CLASSIFICATION_SPLIT = Deviation(
    setting="train/test split and standardisation (classification)",
    published="sklearn train_test_split (random_state per script and preprocessing not recorded in PAPER.md)",
    uqkd="stratified 80/20 split seeded by the run's seed; features standardised with the training set's "
         "statistics",
    why="the scripts are not available to us, so their exact split cannot be reproduced",
)

#: variance-aware-linear and variance-aware-mlp (section 7, tabular)
TABULAR_VA_METHODS = Deviation(
    setting="methods",
    published="averaging and variance weighting (its label rule uses the noise-free teacher mean and the true "
              "noise variance)",
    uqkd="also single (one draw) and two oracle-free variance weightings (variance-weighting-wls, "
         "variance-weighting-shrinkage); the published rule runs as variance-weighting-paper-oracle, flagged oracle",
    why="the published rule uses oracle information a practitioner does not have",
)

#: the tabular MLP experiments
MLP_COMMON_RANDOM_NUMBERS = Deviation(
    setting="random numbers across cells",
    published="not recorded in PAPER.md (the linear section 7 script draws afresh per run)",
    uqkd="the students of every cell of a sweep share their initialisation seeds (common random numbers)",
    why="differences between cells and methods are then not initialisation noise",
)

#: the experiments the paper does not run (adaptive budgets)
BEYOND_THE_PAPER = Deviation(
    setting="experiment",
    published="none: the paper has no such experiment",
    uqkd="uqkd's own experiment; every setting of its paper profile is uqkd's choice",
    why="beyond the paper (an extension of section 7)",
)

LLM_MODELS = Deviation(
    setting="teacher and student models",
    published="a larger causal LM teacher distilled into distilgpt2 students",
    uqkd="SmolLM2-135M-Instruct teacher (offline GGUF, de-quantised); each student starts as the teacher's own "
         "weights (self-distillation, student_every=1) and is fine-tuned in full (lora=false)",
    why="the one model available offline; set teacher= and student= for the published bigger-teacher design",
)

LLM_QUESTIONS = Deviation(
    setting="questions",
    published="BioASQ questions (how many not recorded in PAPER.md)",
    uqkd="countryinfo capital questions (qa_kinds=capital): n_train=200 transfer (distilled-on; the set has "
         "184), n_eval=50 held-out",
    why="BioASQ is not available offline; countryinfo answers can be checked for accuracy and hallucination",
)

LLM_PROMPT = Deviation(
    setting="prompt format",
    published="\"Question: {q}\\nAnswer:\"",
    uqkd="the model's chat template (SmolLM2-Instruct has one); models without a template get the published "
         "format",
    why="an instruct model answers in its chat format",
)

LLM_ANSWER_LENGTH = Deviation(
    setting="answer length",
    published="generation up to the model's maximum length",
    uqkd="max_new_tokens=32",
    why="short factual answers; bounds generation time",
)

#: every LLM experiment (the published §4-§7 LLM scripts share this setting)
LLM_SETTING: tuple[Deviation, ...] = (LLM_MODELS, LLM_QUESTIONS, LLM_PROMPT, LLM_ANSWER_LENGTH)
