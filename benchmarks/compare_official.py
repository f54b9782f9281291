"""Side-by-side sampling speed of arvis and the official LlamaGen and VAR code: the same random weights, parity
checked, both timed interleaved in one process per model.

    python benchmarks/compare_official.py --llamagen-repo /path/to/LlamaGen --var-repo /path/to/VAR

The repositories are clones the user provides (checked against FoundationVision/LlamaGen ce98ec4 and
FoundationVision/VAR 78b9539); nothing is fetched. Both have a top-level ``utils`` package and VAR's builder
patches ``reset_parameters`` of torch's layers process-wide, so each model runs in a worker process of its own
(this script with ``--worker``).

In a worker: the official models are built at paper size (LlamaGen GPT-B + VQ-16, 256 px; VAR-d16 + its VAE) with
seeded random weights (every parameter redrawn, since upstream zero-initialises the heads), converted to arvis
with the converters ``arvis convert`` uses, then

* parity: teacher-forced logits (max |difference|) and greedy (top-k 1) CFG samples of the first tokens
  (LlamaGen: 16 tokens; VAR: every scale) must agree;
* timing: ``--rounds`` rounds, each sampling one batch with the official code (fp32), then with arvis in fp32,
  then with arvis's variants (``VARIANTS``: fp32 through ``compile_decoding``; and the lossy bf16, bf16 with int8
  generator weights, fp32 tokens with a bf16 decoder; each one's greedy tokens' agreement with fp32's is
  reported), then with the official code in
  bf16 where it runs, same labels, CFG on, tokens and decoding both timed, after one warm-up round; the minimum
  per side is reported, in seconds per image, with the ratios to the official fp32 code (and official bf16
  beside arvis bf16).

Settings: LlamaGen cfg 2.0, top-k 0, top-p 1 (its sample_c2i defaults but top-k); VAR cfg 1.5 (arvis's linear
ramp to 2.5), top-k 900, top-p 0.96, as VAR's demo. Random weights make the token draws meaningless; only the
time is compared.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

BATCH_LABELS = (207, 360, 387, 974, 88, 979, 417, 279)


def _redraw(module: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    """Every parameter redrawn from a seeded generator: norms around 1, biases small, weights N(0, std)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "norm" in name and name.endswith("weight"):
                values = 1.0 + 0.1 * torch.randn(parameter.shape, generator=generator)
            elif name.endswith("bias"):
                values = 0.01 * torch.randn(parameter.shape, generator=generator)
            else:
                values = std * torch.randn(parameter.shape, generator=generator)
            parameter.copy_(values)


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _interleaved(official, ours: dict, rounds: int, batch: int) -> dict:
    """One warm-up round, then ``rounds`` rounds of official then each of ``ours`` (name -> function); minima in
    seconds per image, and each of ours' ratio to the official code."""
    sides = {"official": official, **ours}
    for function in sides.values():
        function()
    times = {name: [] for name in sides}
    for _ in range(rounds):
        for name, function in sides.items():
            times[name].append(_timed(function) / batch)
    best = {name: min(values) for name, values in times.items()}
    return {"official_s_per_image": round(best["official"], 3),
            **{f"{name}_s_per_image": round(best[name], 3) for name in ours},
            **{f"{name}_ratio": round(best["official"] / best[name], 3) for name in ours},
            "all_rounds": {name: [round(value, 3) for value in values] for name, values in times.items()}}


def _lowered(module: torch.nn.Module, quantize: bool = False) -> torch.nn.Module:
    """A bf16 copy of ``module`` (weights rounded once, as ``arvis.load(..., dtype=torch.bfloat16)`` does), with
    int8 weights if ``quantize`` (as ``quantize="int8"`` does)."""
    from arvis.nn.quantized import quantize_int8_

    lowered = copy.deepcopy(module).to(torch.bfloat16).eval()
    return quantize_int8_(lowered) if quantize else lowered


VARIANTS = {  # name -> (what the row says, generator lowered, generator int8, tokenizer lowered, compiled)
    "arvis_compiled": ("arvis fp32, Generator.compile_decoding() (static KV cache, inductor)", False, False, False,
                       True),
    "arvis_bf16": ("arvis in bf16 (lossy)", True, False, True, False),
    "arvis_int8": ("arvis in bf16 with int8 generator weights (lossy)", True, True, True, False),
    "arvis_bf16_decoder": ("arvis fp32 tokens, bf16 decoder (lossy pixels)", False, False, True, False),
}


def _arvis_side(sampler, labels, batch: int):
    """The timed arvis side: sample one batch with ``sampler`` and decode it, for any (generator, tokenizer)."""
    from arvis.samplers.logits import per_sample_generators

    def ours(generator, tokenizer) -> None:
        sampled = sampler(generator, labels, rng=per_sample_generators(0, 0, batch))
        with torch.inference_mode():
            tokenizer.decode(sampled)

    return ours


def _variant_sides(generator, tokenizer, greedy, sample_greedy, ours, names=tuple(VARIANTS)) -> tuple[dict, dict]:
    """arvis's variants ``names`` of (generator, tokenizer): their timed functions and how often each one's greedy
    tokens agree with fp32's."""
    sides, agreement = {}, {}
    for name in names:
        _, lower_generator, quantize, lower_tokenizer, compiled = VARIANTS[name]
        variant_generator = _lowered(generator, quantize) if lower_generator else generator
        if compiled:
            variant_generator = copy.deepcopy(generator).compile_decoding()
        variant_tokenizer = _lowered(tokenizer) if lower_tokenizer else tokenizer
        agreement[f"{name}_greedy_agreement"] = round((sample_greedy(variant_generator) == greedy).float()
                                                      .mean().item(), 3)
        sides[name] = lambda g=variant_generator, t=variant_tokenizer: ours(g, t)
    return sides, agreement


def llamagen_worker(repo: str, batch: int, rounds: int, sjd_passes_per_token: float = 0.0) -> dict:
    sys.path.insert(0, repo)
    from autoregressive.models.generate import generate
    from autoregressive.models.gpt import GPT_models
    from tokenizer.tokenizer_image.vq_model import VQ_models

    from arvis.convert.llamagen import convert_llamagen_gpt, convert_llamagen_vq
    from arvis.samplers import sampler_for

    torch.manual_seed(0)
    vq = VQ_models["VQ-16"](codebook_size=16384, codebook_embed_dim=8)
    gpt = GPT_models["GPT-B"](vocab_size=16384, block_size=256, num_classes=1000, cls_token_num=1,
                              model_type="c2i")
    _redraw(vq, 1)
    _redraw(gpt, 2)
    vq.eval(), gpt.eval()
    tokenizer = convert_llamagen_vq(vq.state_dict(), image_size=256).eval()
    generator = convert_llamagen_gpt(gpt.state_dict(), tokenizer=tokenizer, preset="llamagen-b").eval()
    labels = torch.tensor(BATCH_LABELS[:batch])
    with torch.no_grad():
        tokens = torch.randint(0, 16384, (batch, 256), generator=torch.Generator().manual_seed(3))
        upstream_logits, _ = gpt(tokens[:, :-1], labels, input_pos=torch.arange(256))
        logits_difference = (generator(tokens, labels).logits - upstream_logits).abs().max().item()
        upstream_greedy = generate(gpt, labels, 16, cfg_scale=2.0, temperature=1.0, top_k=1, top_p=1.0,
                                   sample_logits=True)
    greedy = sampler_for(generator, cfg_scale=2.0, top_k=1)(generator, labels, length=16)
    sampler = sampler_for(generator, cfg_scale=2.0)

    def official(gpt=gpt, vq=vq) -> None:
        with torch.no_grad():
            sequence = generate(gpt, labels, 256, cfg_scale=2.0, temperature=1.0, top_k=0, top_p=1.0,
                                sample_logits=True)
            vq.decode_code(sequence, shape=[batch, 8, 16, 16])

    ours = _arvis_side(sampler, labels, batch)

    lossy, agreement = _variant_sides(
        generator, tokenizer, greedy,
        lambda g: sampler_for(g, cfg_scale=2.0, top_k=1)(g, labels, length=16), ours)
    gpt_bf16, vq_bf16 = copy.deepcopy(gpt).to(torch.bfloat16), copy.deepcopy(vq).to(torch.bfloat16)
    row = {"model": "LlamaGen GPT-B + VQ-16 (256 tokens + decode), cfg 2.0", "batch": batch,
           "logits_max_abs_difference": logits_difference,
           "greedy_identical": bool(torch.equal(greedy, upstream_greedy.long())), **agreement,
           **_interleaved(official, {"arvis": lambda: ours(generator, tokenizer), **lossy,
                                     "official_bf16": lambda: official(gpt_bf16, vq_bf16)}, rounds, batch)}
    if sjd_passes_per_token:
        row["speculative_jacobi"] = _speculative_jacobi_estimate(gpt, vq, generate, generator, tokenizer,
                                                                 sjd_passes_per_token, rounds)
    return row


def _speculative_jacobi_estimate(gpt, vq, generate, generator, tokenizer, passes_per_token: float,
                                 rounds: int) -> dict:
    """At batch 1: the official code's s/img beside arvis's SJD estimate, the measured cost of one SJD pass (a
    16-draft window with CFG, timed here on these weights) times the passes one image needs on trained weights
    (``passes_per_token`` x 256, measured on the glyph pipelines: random weights accept almost nothing), plus
    the measured decode."""
    from arvis.samplers import sampler_for

    labels = torch.tensor(BATCH_LABELS[:1])
    sampler = sampler_for(generator, "speculative-jacobi", cfg_scale=2.0, draft_window=16)
    calls = [0]
    step = generator.step

    def counting(*args, **kwargs):
        calls[0] += 1
        return step(*args, **kwargs)

    def official() -> None:
        with torch.no_grad():
            sequence = generate(gpt, labels, 256, cfg_scale=2.0, temperature=1.0, top_k=0, top_p=1.0,
                                sample_logits=True)
            vq.decode_code(sequence, shape=[1, 8, 16, 16])

    generator.step = counting
    best_pass, best_decode, best_official = float("inf"), float("inf"), float("inf")
    for round_index in range(rounds):
        best_official = min(best_official, _timed(official))
        calls[0] = 0
        start = time.perf_counter()
        tokens = sampler(generator, labels, rng=torch.Generator().manual_seed(round_index))
        best_pass = min(best_pass, (time.perf_counter() - start) / calls[0])
        start = time.perf_counter()
        with torch.inference_mode():
            tokenizer.decode(tokens)
        best_decode = min(best_decode, time.perf_counter() - start)
    del generator.step
    estimate = best_pass * passes_per_token * 256 + best_decode
    return {"batch": 1, "official_s_per_image": round(best_official, 3), "sjd_pass_ms": round(best_pass * 1e3, 1),
            "passes_per_image_on_trained_weights": round(passes_per_token * 256, 1),
            "decode_s": round(best_decode, 3), "arvis_sjd_estimated_s_per_image": round(estimate, 3),
            "ratio": round(best_official / estimate, 3)}


def var_worker(repo: str, batch: int, rounds: int, sjd_passes_per_token: float = 0.0) -> dict:
    dist = types.ModuleType("dist")  # VAR's utilities without torch.distributed (as tests/convert does)
    dist.initialized = lambda: False
    dist.get_device = lambda: "cpu"
    sys.modules["dist"] = dist
    sys.path.insert(0, repo)
    import models.var as var_module
    from models import build_vae_var

    from arvis.convert.var import convert_var_generator, convert_var_tokenizer
    from arvis.samplers import sampler_for

    torch.manual_seed(0)
    vae, var = build_vae_var(device="cpu", depth=16, shared_aln=False, attn_l2_norm=True, flash_if_available=False,
                             fused_if_available=False)
    _redraw(vae, 1)
    _redraw(var, 2)
    vae.eval(), var.eval()
    var.cond_drop_rate = 0.0  # VAR drops labels in its forward even in eval mode (build_vae_var sets 0.1)
    tokenizer = convert_var_tokenizer(vae.state_dict()).eval()
    generator = convert_var_generator(var.state_dict(), tokenizer, depth=16).eval()
    labels = torch.tensor(BATCH_LABELS[:batch])
    length = sum(p * p for p in var.patch_nums)
    with torch.no_grad():
        tokens = torch.randint(0, 4096, (batch, length), generator=torch.Generator().manual_seed(3))
        splits = list(tokens.split([p * p for p in var.patch_nums], dim=1))
        upstream_logits = var(labels, vae.quantize.idxBl_to_var_input(splits))
        logits_difference = (generator(tokens, labels).logits - upstream_logits).abs().max().item()
        recorded = []
        original = var_module.sample_with_top_k_top_p_

        def recording(logits, **kwargs):
            out = original(logits, **kwargs)
            recorded.append(out[:, :, 0].clone())
            return out

        var_module.sample_with_top_k_top_p_ = recording
        var.autoregressive_infer_cfg(batch, labels, g_seed=0, cfg=1.5, top_k=1, top_p=0.0)
        var_module.sample_with_top_k_top_p_ = original
    upstream_greedy = torch.cat(recorded, dim=1)
    greedy = sampler_for(generator, cfg_scale=2.5, cfg_schedule="linear", top_k=1)(generator, labels)
    sampler = sampler_for(generator, cfg_scale=2.5, cfg_schedule="linear", top_k=900, top_p=0.96)

    def official(var=var) -> None:
        with torch.no_grad():
            var.autoregressive_infer_cfg(batch, labels, g_seed=0, cfg=1.5, top_k=900, top_p=0.96)

    ours = _arvis_side(sampler, labels, batch)

    lossy, agreement = _variant_sides(
        generator, tokenizer, greedy,
        lambda g: sampler_for(g, cfg_scale=2.5, cfg_schedule="linear", top_k=1)(g, labels), ours,
        names=[name for name in VARIANTS if name != "arvis_compiled"])  # 10 scale shapes: 10 CPU compilations
    row = {"model": "VAR-d16 + VAE (10 scales, 680 tokens + decode), cfg 1.5 ramp, top-k 900, top-p 0.96",
           "batch": batch, "logits_max_abs_difference": logits_difference,
           "greedy_identical": bool(torch.equal(greedy, upstream_greedy.long())), **agreement}
    var_bf16 = copy.deepcopy(var).to(torch.bfloat16)
    try:
        official(var_bf16)
        lossy["official_bf16"] = lambda: official(var_bf16)
    except (RuntimeError, TypeError) as error:  # upstream's AdaLN and phi convs cast their inputs to float32
        row["official_bf16_error"] = str(error).splitlines()[0][:200]
    return {**row, **_interleaved(official, {"arvis": lambda: ours(generator, tokenizer), **lossy}, rounds, batch)}


WORKERS = {"llamagen": llamagen_worker, "var": var_worker}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llamagen-repo", help="a clone of FoundationVision/LlamaGen (ce98ec4)")
    parser.add_argument("--var-repo", help="a clone of FoundationVision/VAR (78b9539)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sjd-passes-per-token", type=float, default=0.0,
                        help="with a value (0.345: 22.1 passes for 64 tokens on the trained quickstart, "
                             "docs/results.md), also time one speculative Jacobi pass on GPT-B at batch 1 and "
                             "estimate SJD's s/img beside the official code's at batch 1")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--repo", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.repo, args.batch_size, args.rounds, args.sjd_passes_per_token)))
        return
    repos = {"llamagen": args.llamagen_repo, "var": args.var_repo}
    if not any(repos.values()):
        parser.error("pass --llamagen-repo and/or --var-repo (local clones of the official repositories)")
    rows = []
    for name, repo in repos.items():
        if repo is None:
            continue
        if not Path(repo).is_dir():
            parser.error(f"{repo} is not a folder: pass a local clone of the official {name} repository")
        result = subprocess.run([sys.executable, __file__, "--worker", name, "--repo", repo, "--batch-size",
                                 str(args.batch_size), "--rounds", str(args.rounds), "--sjd-passes-per-token",
                                 str(args.sjd_passes_per_token)], capture_output=True, text=True, check=False)
        if result.returncode:
            raise SystemExit(f"the {name} worker failed:\n{result.stderr[-4000:]}")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| model | batch | official s/img | arvis s/img | ratio | logits max diff | greedy identical |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['batch']} | {row['official_s_per_image']} | {row['arvis_s_per_image']} | "
              f"{row['arvis_ratio']}x | {row['logits_max_abs_difference']:.1e} | {row['greedy_identical']} |")
        for name, (what, *_) in VARIANTS.items():
            if f"{name}_s_per_image" not in row:
                continue
            print(f"| {row['model']}, {what} (greedy tokens agree with fp32's at "
                  f"{row[f'{name}_greedy_agreement']:.0%}) | {row['batch']} | {row['official_s_per_image']} | "
                  f"{row[f'{name}_s_per_image']} | {row[f'{name}_ratio']}x | | |")
        if "official_bf16_s_per_image" in row:
            print(f"| {row['model']}, official in bf16 beside arvis in bf16 | {row['batch']} | "
                  f"{row['official_bf16_s_per_image']} | {row['arvis_bf16_s_per_image']} | "
                  f"{row['official_bf16_s_per_image'] / row['arvis_bf16_s_per_image']:.3f}x | | |")
        else:
            print(f"| {row['model']}, official in bf16: {row.get('official_bf16_error')} | | | | | | |")
        if "speculative_jacobi" in row:
            sjd = row["speculative_jacobi"]
            print(f"| {row['model']}, SJD estimate (pass cost here x passes on trained weights) | 1 | "
                  f"{sjd['official_s_per_image']} | {sjd['arvis_sjd_estimated_s_per_image']} | {sjd['ratio']}x | | |")


if __name__ == "__main__":
    main()
