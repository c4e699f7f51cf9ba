"""LLM distillation with uncertainty: k-sample teacher generation, training-set methods, students, metrics.

Submodules (import them directly; each imports torch/transformers only when used):

- :mod:`uqkd.llm.models`    load teachers/students offline, derived students, tiny test models
- :mod:`uqkd.llm.generate`  batched seeded k-sample generation with an on-disk cache
- :mod:`uqkd.llm.embed`     SBERT embeddings (all-MiniLM-L6-v2, packaged offline)
- :mod:`uqkd.llm.select`    single / multi-response / averaging / variance-weighting / inverse-variance-loss
- :mod:`uqkd.llm.train`     supervised fine-tuning on answer tokens, per-example weights, LoRA
- :mod:`uqkd.llm.weighted_trainer`  ``WeightedSFTTrainer``: TRL's ``SFTTrainer`` honouring a ``weight`` column
- :mod:`uqkd.llm.evaluate`  embedding MSE, cosine, alignment, intra/inter-student variance, accuracy, hallucination
- :mod:`uqkd.llm.pipeline`  the end-to-end pipeline the experiments run
- :mod:`uqkd.llm.cli`       ``uqkd llm sample | build-dataset | distill | evaluate``
"""

from typing import Any

__all__ = ["WeightedSFTTrainer"]


def __getattr__(name: str) -> Any:
    """``from uqkd.llm import WeightedSFTTrainer`` imports TRL (and torch) only then."""
    if name == "WeightedSFTTrainer":
        from .weighted_trainer import WeightedSFTTrainer

        return WeightedSFTTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
