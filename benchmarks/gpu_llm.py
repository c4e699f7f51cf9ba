"""GPU check of the LLM path: sample / distill / evaluate in bfloat16 on CUDA, and the vLLM backend.

Usage (on a machine with a CUDA GPU; not part of ``make bench``)::

    python benchmarks/gpu_llm.py [--questions 64] [--k 8] [--max-new-tokens 32] [--skip-vllm]

Prints tokens/s of the in-process ``hf`` backend (bf16), of ``vllm`` when installed
(``pip install 'uqkd[vllm]'``), the SFT steps/s of a weighted TRL distillation and the
evaluation time. Exits 2 with one line when no GPU is visible.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="smollm2")
    ap.add_argument("--questions", type=int, default=64)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--students", type=int, default=2)
    ap.add_argument("--skip-vllm", action="store_true")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_llm: no CUDA GPU visible; nothing measured", file=sys.stderr)
        return 2
    from uqkd.data.qa import countryinfo_qa
    from uqkd.llm.embed import load_embedder
    from uqkd.llm.evaluate import evaluate_model
    from uqkd.llm.generate import DecodingConfig, generate_samples
    from uqkd.llm.models import derive_student, load_causal_lm
    from uqkd.llm.select import build_training_set, embedding_dispersion
    from uqkd.llm.train import TrainConfig, train_student_trl

    items = countryinfo_qa(("capital", "continent"))[: a.questions]
    qs = [it.question for it in items]
    dec = DecodingConfig(max_new_tokens=a.max_new_tokens)
    print(f"GPU {torch.cuda.get_device_name(0)}; torch {torch.__version__}; {len(qs)} questions x k={a.k}")
    teacher = load_causal_lm(a.teacher, device="cuda", dtype="bfloat16")
    generate_samples(teacher, qs[:2], 1, dec, seed=99)  # warm-up
    torch.cuda.synchronize()
    for bs in (64, 256, 1024):
        g = generate_samples(teacher, qs, a.k, dec, seed=0, batch_size=bs)
        print(f"hf bf16 batch {bs:>5}: {g.generated_tokens} tokens in {g.seconds:.2f}s = "
              f"{g.generated_tokens / g.seconds:.0f} tokens/s")
    if not a.skip_vllm:
        try:
            from uqkd.llm.backends import load_teacher

            v = load_teacher(f"vllm:{a.teacher}", dtype="bfloat16")
            t0 = time.perf_counter()
            gv = generate_samples(v, qs, a.k, dec, seed=0, batch_size=len(qs) * a.k)
            dt = time.perf_counter() - t0
            print(f"vllm bf16: {gv.generated_tokens} tokens in {dt:.2f}s = {gv.generated_tokens / dt:.0f} tokens/s")
        except Exception as exc:  # noqa: BLE001 - report and go on with the rest of the check
            print(f"vllm: not measured ({type(exc).__name__}: {exc})")
    emb = load_embedder("all-MiniLM-L6-v2", device="cuda")
    t0 = time.perf_counter()
    e = emb.encode([t for row in g.texts for t in row]).reshape(len(qs), a.k, -1)
    print(f"SBERT on cuda: {len(qs) * a.k} answers in {time.perf_counter() - t0:.2f}s")
    recs = [{**it.to_dict(), "samples": g.texts[i], "dispersion": embedding_dispersion(e[i])}
            for i, it in enumerate(items)]
    rows, _ = build_training_set(recs, "inverse-variance-loss", emb)
    student = derive_student(teacher, 3)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        trained, info = train_student_trl(student, rows, TrainConfig(lr=5e-5, epochs=3, batch_size=10), output_dir=d)
        dt = time.perf_counter() - t0
    print(f"TRL weighted SFT bf16: {info['n_steps']} steps in {dt:.1f}s = {info['n_steps'] / dt:.2f} steps/s, "
          f"final loss {info['losses'][-1]:.3f}")
    t0 = time.perf_counter()
    ev = evaluate_model(trained, items, emb, k=5, decoding=dec, seed=0)
    print(f"evaluate: {time.perf_counter() - t0:.1f}s; accuracy {ev.metrics['accuracy']:.3f}, "
          f"intra_var {ev.metrics['intra_var']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
