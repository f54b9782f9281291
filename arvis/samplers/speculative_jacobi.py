"""Speculative Jacobi decoding (SJD): several tokens per pass of any next-token generator, in exactly the
distribution of next-token sampling.

Teng et al., "Accelerating Auto-regressive Text-to-Image Generation with Training-free Speculative Jacobi
Decoding", 2024, https://arxiv.org/abs/2410.01699 (code: tyshiwo1/Accelerating-T2I-AR-with-SJD).

Shapes: w window, v vocabulary, l tokens.

One sample's state is its accepted tokens x_0 .. x_{n-1} and a window of w = ``draft_window`` draft tokens
d_n .. d_{n+w-1}, each with the distribution q_j it was drawn from. One pass feeds [x_{n-1}, d_n, ..., d_{n+w-2}] against the cache of the
accepted prefix and gives, at every fed position, the guided and filtered distribution p_j of the token after it
(the settings' guidance schedule is applied at each token's own index). The drafts are verified left to right as
in speculative sampling (:func:`verify_drafts`): d_j is accepted with probability min(1, p_j(d_j) / q_j(d_j)); at
the first rejection x_j is drawn from max(0, p_j − q_j), normalised, and the rest of the window is dropped. p_n
conditions on accepted tokens only, and a later p_j is exact as long as every draft before it was accepted, so
each accepted token follows the model's conditional distribution: the output is distributed as
:class:`~arvis.samplers.next_token.NextTokenSampler`'s with the same settings (not the same stream of draws).
Every pass accepts at least one token; the first token is drawn from the prefix pass.

Refilling the window (the Jacobi iteration): a position whose distribution the pass computed, but which was not
accepted, gets a draft drawn from that distribution (q_j = it). New positions at the window's end get an
initial draft with q_j a point mass on it (so it is accepted with probability p_j(d_j)), by ``draft_init``:

* ``"repeat"``: the token before it when that is in the same row of a 2D grid (upstream's LlamaGen script,
  ``multi_token_init_scheme='repeat_horizon'``), else uniform;
* ``"random"``: uniform over the vocabulary (the paper's random initialisation).

The cache holds the accepted prefix only: a pass writes its w positions and is rewound to the accepted ones.

Deviations from upstream: samples are decoded one after another, each with its own cache (upstream decodes one
image at a time too), so a batch gives what its samples give one by one; the randomness of sample i comes from
its own generator. Upstream's LlamaGen path also keeps the top-k of the draft distributions; here q_j is exactly
the filtered distribution the draft was drawn from.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import Tensor

from arvis.conditions import Condition
from arvis.generators.base import Generator
from arvis.samplers.base import SAMPLERS, Sampler
from arvis.samplers.guidance import feed_both, guidance_conditions, guide
from arvis.samplers.logits import RandomSource, filter_logits, sample_categorical
from arvis.samplers.settings import CategoricalSettings, setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpeculativeJacobiSettings(CategoricalSettings):
    """Settings of the ``speculative-jacobi`` sampler: next-token sampling's, the window and the draft init."""

    draft_window: int = setting(16, "speculative Jacobi decoding: draft tokens verified per pass (upstream: 16)")
    draft_init: Literal["repeat", "random"] = setting(
        "repeat", "speculative Jacobi decoding: a new draft is the token before it in its grid row, or uniform")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.draft_window < 1:
            raise ValueError(f"draft_window must be >= 1, got {self.draft_window}")


def verify_drafts(target: Tensor, drafts: Tensor, proposal: Tensor, uniforms: Tensor,
                  generator: torch.Generator | None = None) -> tuple[int, Tensor]:
    """Speculative sampling over a window: target p (w, v) and proposal q (w, v) probabilities, drafts (w,) long
    drawn from q, uniforms (w,) in [0, 1) -> (a, tokens (a,) long), a >= 1.

    Drafts are accepted left to right while ``uniforms[j] < p_j(d_j) / q_j(d_j)``; the first rejected one is
    replaced by a draw from max(0, p_j − q_j) (normalised; from p_j when that is empty, which only float rounding
    can cause) and ends the window.
    """
    rows = torch.arange(drafts.shape[0], device=drafts.device)
    p_draft, q_draft = target[rows, drafts], proposal[rows, drafts]
    accepted = uniforms * q_draft < p_draft  # r < p / q without dividing by q = 0 (q_j(d_j) > 0 for a drawn draft)
    rejected = (~accepted).nonzero()
    if not rejected.numel():
        return drafts.shape[0], drafts
    first = int(rejected[0])
    residual = (target[first] - proposal[first]).clamp_min(0.0)
    if not residual.sum() > 0:
        residual = target[first]
    replacement = sample_categorical(residual.log()[None], _one_row(generator))[0]
    return first + 1, torch.cat([drafts[:first], replacement[None]])


def _one_row(generator: torch.Generator | None) -> list[torch.Generator] | None:
    """A sample's generator as the per-sample list of a batch of one: its draws happen on its own device (a CPU
    generator may drive a model on another device, as with the other samplers)."""
    return None if generator is None else [generator]


@SAMPLERS.register
class SpeculativeJacobiSampler(Sampler):
    """Verifies a window of draft tokens per pass, keeping next-token sampling's distribution (SJD)."""

    name = "speculative-jacobi"
    config_class = SpeculativeJacobiSettings
    description = "speculative Jacobi decoding: a window of drafts verified per pass, next-token's distribution"

    @torch.inference_mode()
    def __call__(self, model: Generator, condition: Condition | Tensor, *, rng: RandomSource = None) -> Tensor:
        """condition of b samples (or class ids (b,) long) -> tokens (b, l) long in layout order; ``rng``: one
        generator, or one per sample (sample i then draws only from ``rng[i]``)."""
        self.check_drivable(model)
        condition = model.check_condition(condition)
        batch = condition.batch_size
        if isinstance(rng, (list, tuple)) and len(rng) != batch:
            raise ValueError(f"got {len(rng)} per-sample generators for a batch of {batch}")
        rows = [self._sample_one(model, condition.select([row]),
                                 rng[row] if isinstance(rng, (list, tuple)) else rng) for row in range(batch)]
        return model.to_layout_order(torch.stack(rows))

    def _sample_one(self, model: Generator, condition: Condition, generator: torch.Generator | None) -> Tensor:
        """One sample's tokens (l,) long in emission order."""
        settings = self.settings
        length, vocab = model.layout.length, model.vocab_size
        device = condition.device
        conditions = guidance_conditions(condition, model, settings)
        cache = model.new_cache(conditions.batch_size)
        target = self._distributions(model.step(None, conditions, cache), 0, length)  # (1, v): token 0
        tokens = torch.empty(length, dtype=torch.long, device=device)
        tokens[0] = sample_categorical(target.log(), _one_row(generator))[0]
        accepted = 1
        drafts = torch.empty(length, dtype=torch.long, device=device)
        proposals: dict[int, Tensor] = {}  # position -> q (v,) of a draft drawn from a distribution
        self._initialise(model, tokens, accepted, drafts, proposals, range(1, min(length, 1 + settings.draft_window)),
                         generator)
        while accepted < length:
            count = min(settings.draft_window, length - accepted)
            fed = torch.cat([tokens[accepted - 1:accepted], drafts[accepted:accepted + count - 1]])
            start = cache.length
            logits = model.step(feed_both(fed[None], settings), conditions, cache, every_position=True)
            target = self._distributions(logits, accepted, length)  # (count, v): tokens accepted .. + count - 1
            window = range(accepted, accepted + count)
            proposal = torch.stack([proposals[j] if j in proposals else self._point_mass(drafts[j], vocab)
                                    for j in window])
            uniforms = torch.rand(count, generator=generator, device=generator.device if generator else device)
            kept, new = verify_drafts(target, drafts[accepted:accepted + count], proposal, uniforms.to(device),
                                      generator)
            tokens[accepted:accepted + kept] = new
            cache.rewind(start + kept)  # the fed positions whose input is now an accepted token
            for j in window:
                proposals.pop(j, None)
            for j in range(accepted + kept, accepted + count):  # computed but not accepted: draw from p_j
                drafts[j] = sample_categorical(target[j - accepted].log()[None], _one_row(generator))[0]
                proposals[j] = target[j - accepted]
            previous_end = accepted + count
            accepted += kept
            self._initialise(model, tokens, accepted, drafts, proposals,
                             range(previous_end, min(length, accepted + settings.draft_window)), generator)
        return tokens

    def _distributions(self, logits: Tensor, first: int, length: int) -> Tensor:
        """(1 or 2, n, v) step logits of tokens first .. first + n - 1 of l = ``length`` -> (n, v) guided, filtered
        probabilities."""
        settings = self.settings
        guided = torch.cat([guide(logits[:, k], settings, first + k, length) for k in range(logits.shape[1])])
        filtered = filter_logits(guided, temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
        return filtered.float().softmax(-1)

    def _initialise(self, model: Generator, tokens: Tensor, accepted: int, drafts: Tensor,
                    proposals: dict[int, Tensor], positions: range, generator: torch.Generator | None) -> None:
        """Initial drafts (point-mass proposals) at ``positions``, by ``settings.draft_init``; tokens before
        ``accepted`` are accepted ones, later ones drafts."""
        shapes = model.layout.shapes
        width = shapes[0][-1] if len(shapes) == 1 and len(shapes[0]) == 2 else None
        for j in positions:
            if self.settings.draft_init == "repeat" and width is not None and j % width:
                drafts[j] = tokens[j - 1] if j - 1 < accepted else drafts[j - 1]
            else:
                drafts[j] = torch.randint(model.vocab_size, (1,), generator=generator,
                                          device=generator.device if generator else drafts.device)[0]
            proposals.pop(j, None)

    @staticmethod
    def _point_mass(token: Tensor, vocab: int) -> Tensor:
        return torch.zeros(vocab, device=token.device).index_fill_(0, token[None], 1.0)
