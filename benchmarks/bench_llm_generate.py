"""Generation throughput: uqkd's batched k-sample generation vs transformers' batched
``generate(do_sample=True, num_return_sequences=k)`` and vs one sample per prompt per pass.

Usage::

    python benchmarks/bench_llm_generate.py [--model smollm2] [--prompts 8] [--k 4] [--max-new-tokens 16]
    python benchmarks/bench_llm_generate.py --tiny      # a tiny random model, seconds

Prints tokens/s of both side by side with their ratio, then the sample cache's hit rate and time
on a rerun of the batched call.
"""

from __future__ import annotations

import argparse
import tempfile
import time


def naive(lm, questions, k, dec, seed):
    """One ``model.generate`` call per prompt per sample (transformers' own sampling)."""
    import torch

    from uqkd.llm.generate import format_prompt

    tok = lm.tokenizer
    n_tokens = 0
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(k):
            for q in questions:
                enc = tok([format_prompt(lm, q)], return_tensors="pt", add_special_tokens=not lm.chat).to(lm.device)
                with torch.no_grad():
                    out = lm.model.generate(**enc, do_sample=True, temperature=dec.temperature, top_k=dec.top_k,
                                            top_p=dec.top_p, repetition_penalty=dec.repetition_penalty,
                                            max_new_tokens=dec.max_new_tokens, pad_token_id=tok.pad_token_id)
                new = out[0, enc["input_ids"].shape[1]:].tolist()
                if tok.eos_token_id in new:
                    new = new[: new.index(tok.eos_token_id) + 1]
                n_tokens += len(new)
    return n_tokens, time.perf_counter() - t0


def hf_batched(lm, questions, k, dec, seed):
    """transformers' own batched sampling: every prompt once, ``num_return_sequences=k`` (global torch RNG,
    so sample j depends on the batch: the per-sequence seeding uqkd adds is what this lacks)."""
    import torch

    from uqkd.llm.generate import encode_prompt, stop_token_ids

    tok = lm.tokenizer
    ids = [encode_prompt(lm, q) for q in questions]
    L = max(map(len, ids))
    pad = tok.pad_token_id
    x = torch.tensor([[pad] * (L - len(p)) + p for p in ids], device=lm.device)
    m = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in ids], device=lm.device)
    stops = set(stop_token_ids(lm))
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        out = lm.model.generate(input_ids=x, attention_mask=m, do_sample=True, num_return_sequences=k,
                                temperature=dec.temperature, top_k=dec.top_k, top_p=dec.top_p,
                                repetition_penalty=dec.repetition_penalty, max_new_tokens=dec.max_new_tokens,
                                pad_token_id=pad, eos_token_id=sorted(stops))
    n_tokens = 0
    for row in out[:, L:].tolist():
        n = len(row)
        for i, t in enumerate(row):
            if t in stops:
                n = i + 1
                break
        n_tokens += n
    return n_tokens, time.perf_counter() - t0


def main(argv=None):
    import torch

    from uqkd.data.qa import countryinfo_qa, split_qa
    from uqkd.llm.generate import DecodingConfig, SampleCache, generate_samples
    from uqkd.llm.models import load_causal_lm, tiny_causal_lm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--tiny", action="store_true", help="use a tiny random model instead")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    lm = tiny_causal_lm() if a.tiny else load_causal_lm(a.model, device=a.device, dtype=a.dtype)
    qs = [it.question for it in split_qa(countryinfo_qa(("capital",)))[0][: a.prompts]]
    dec = DecodingConfig(max_new_tokens=a.max_new_tokens)
    generate_samples(lm, qs[:1], 1, dec, seed=99)  # warm-up

    b = generate_samples(lm, qs, a.k, dec, seed=0, batch_size=a.prompts * a.k)
    nb_tok, nb_s = naive(lm, qs, a.k, dec, seed=0)
    hf_tok, hf_s = hf_batched(lm, qs, a.k, dec, seed=0)
    tb = b.generated_tokens / b.seconds
    tn = nb_tok / nb_s
    th = hf_tok / hf_s
    print(f"model {lm.name}  ({lm.n_params / 1e6:.1f}M params), {a.prompts} prompts x k={a.k}, "
          f"max_new_tokens={a.max_new_tokens}, torch threads={torch.get_num_threads()}")
    print(f"{'':34}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}")
    print(f"{'uqkd batched k-sample (1 batch)':34}{b.generated_tokens:>8}{b.seconds:>10.2f}{tb:>10.1f}")
    print(f"{'transformers num_return_sequences=k':34}{hf_tok:>8}{hf_s:>10.2f}{th:>10.1f}")
    print(f"{'one sample per prompt per pass':34}{nb_tok:>8}{nb_s:>10.2f}{tn:>10.1f}")
    print(f"throughput ratio uqkd / naive: {tb / tn:.2f}x; uqkd / transformers batched: {tb / th:.2f}x")

    with tempfile.TemporaryDirectory() as d:
        cache = SampleCache(d)
        first = generate_samples(lm, qs, a.k, dec, seed=1, cache=cache, batch_size=a.prompts * a.k)
        t0 = time.perf_counter()
        again = generate_samples(lm, qs, a.k, dec, seed=1, cache=SampleCache(d), batch_size=a.prompts * a.k)
        dt = time.perf_counter() - t0
        rate = again.cache_hits / max(again.cache_hits + again.cache_misses, 1)
        print(f"cache: first run {first.cache_misses} misses in {first.seconds:.2f}s; rerun hit rate {rate:.0%} "
              f"({again.cache_hits} hits, {again.cache_misses} misses) in {dt:.3f}s, identical: {again.texts == first.texts}")


if __name__ == "__main__":
    main()
