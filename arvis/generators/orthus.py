"""Orthus: the interleaved AR trunk with continuous image tokens, an LM head for text and a diffusion head.

Kou et al., "Orthus: Autoregressive Interleaved Image-Text Generation with Modality-Specific Heads", 2024,
https://arxiv.org/abs/2412.00127 (upstream zhijie-group/Orthus, ``models/modeling_orthus.py``; facts in
``shared/reference/generators.md`` section 3).

Shapes: b batch, l image tokens, n stream positions, e latent width, d width, V stream vocabulary.

The stream and its documents are :mod:`arvis.generators.interleaved`'s; image positions carry the ``<image>``
placeholder and their input is the soft embedding of the tokenizer's unquantised latent
(:class:`arvis.nn.soft_embedding.SoftCodeEmbedding` over the trunk's image-code embedding rows). The normed hidden
state of ``<boi>`` and of each image position conditions MAR's ``SimpleMLPAdaLN`` head
(:class:`arvis.nn.diffusion_mlp.SimpleMLPAdaLN`) for the next latent; the LM head predicts text and the special
tokens. Training (:meth:`OrthusGenerator.forward`): the cross-entropy of the text and special targets plus
``diffusion_weight`` times the v-prediction loss of diffusers' DDPM schedule (:mod:`arvis.nn.noise_schedule`) on the
latents × ``latent_scale``, each position repeated ``diffusion_repeats`` times with its own timestep and noise.
Sampling (the ``diffusion-head`` sampler): DDIM on the head, the result ÷ ``latent_scale`` fed back.

The recipe: a discrete :class:`~arvis.generators.interleaved.InterleavedGenerator` (stage 1), converted by
:meth:`OrthusGenerator.from_discrete` (the trunk, embeddings and LM head copied; the input codebook from the
tokenizer's); stage 2 (Orthus-base) trains only :meth:`OrthusGenerator.added_modules` on the diffusion loss; stage 3
(unified) trains everything on both losses (``arvis.train.posttrain --method orthus``).

Deviations (see the README's faithfulness notes): τ is a setting (upstream 1; arvis's unit-norm 8-d codes need
about 0.05), the latent scale defaults to 1 / std of the training latents (upstream 0.1 for Chameleon's
256-d latents), the trunk is trained from scratch, and the toy head is smaller than the paper's (the
``orthus-7b`` preset keeps width 1536, 3 blocks, 8 repeats).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import Tensor, nn

from arvis.conditions import Condition
from arvis.generators.base import GENERATORS, IGNORE_INDEX, GeneratorOutput, StepOutput
from arvis.generators.interleaved import InterleavedConfig, InterleavedGenerator
from arvis.nn.diffusion_mlp import SimpleMLPAdaLN
from arvis.nn.kv_cache import KVCache
from arvis.nn.noise_schedule import NoiseScheduleConfig, training_scheduler, v_prediction_loss
from arvis.nn.soft_embedding import SoftCodeEmbedding
from arvis.tokenizers.base import TokenSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrthusConfig(InterleavedConfig, NoiseScheduleConfig):
    """Orthus (the interleaved generator's and the noise schedule's fields inherited).

    Attributes:
        latent_dim: e, the tokenizer's latent width (Chameleon's VQ: 256).
        head_width, head_blocks: the diffusion head (upstream ``diffloss_w`` 1536, 3 residual blocks).
        diffusion_repeats: copies of each position, each with its own timestep and noise (upstream 8).
        latent_scale: the latents' factor into the diffusion space (upstream 0.1); None until set, usually to
            1 / std of the training latents (:meth:`OrthusGenerator.from_discrete`).
        soft_temperature: τ of the soft input (upstream 1, i.e. none).
        learn_soft_temperature: train log τ.
        diffusion_weight: λ of the training loss CE + λ · diffusion.
    """

    latent_dim: int = 256
    head_width: int = 1536
    head_blocks: int = 3
    diffusion_repeats: int = 8
    latent_scale: float | None = None
    soft_temperature: float = 1.0
    learn_soft_temperature: bool = False
    diffusion_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_schedule()
        if self.latent_dim < 1 or self.head_width < 1 or self.head_blocks < 1 or self.diffusion_repeats < 1:
            raise ValueError(f"latent_dim, head_width, head_blocks and diffusion_repeats must be positive, got "
                             f"{self.latent_dim}, {self.head_width}, {self.head_blocks}, {self.diffusion_repeats}")
        if self.latent_scale is not None and not self.latent_scale > 0:
            raise ValueError(f"latent_scale must be > 0 (or None until set from the data), got {self.latent_scale}")
        if not self.soft_temperature > 0:
            raise ValueError(f"soft_temperature must be > 0, got {self.soft_temperature}")
        if self.diffusion_weight < 0:
            raise ValueError(f"diffusion_weight must be >= 0, got {self.diffusion_weight}")


@dataclasses.dataclass
class OrthusOutput(GeneratorOutput):
    """Teacher forcing of Orthus: ``loss`` = ``text_loss`` + λ · ``diffusion_loss`` (both with gradients);
    ``logits`` (b, n, V) are the stream logits of the documents."""

    text_loss: Tensor
    diffusion_loss: Tensor


@GENERATORS.register
class OrthusGenerator(InterleavedGenerator):
    """The interleaved generator with continuous image tokens; see the module docstring."""

    config_class = OrthusConfig
    unit = "latent"  # one step emits one continuous latent
    samplers = ("diffusion-head",)

    def __init__(self, config: OrthusConfig) -> None:
        super().__init__(config)
        self.soft_embedding = SoftCodeEmbedding(config.vocab_size, config.latent_dim, config.soft_temperature,
                                                config.learn_soft_temperature)
        self.diffusion_head = SimpleMLPAdaLN(config.latent_dim, config.head_width, config.dim, config.head_blocks)
        self.reset_parameters()
        self._noise_schedule = None

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for module in self.added_modules().values():  # their own inits, which the interleaved one overwrote
            if module is not None:  # (None while the interleaved __init__ runs, before they are built)
                module.reset_parameters()

    def added_modules(self) -> dict[str, nn.Module]:
        """The modules Orthus adds to the discrete generator (Orthus-base trains only these)."""
        return {name: getattr(self, name, None) for name in ("soft_embedding", "diffusion_head")}

    @classmethod
    def from_discrete(cls, discrete: InterleavedGenerator, tokenizer, config: OrthusConfig) -> OrthusGenerator:
        """Orthus from a trained discrete generator: its trunk, embeddings and LM head copied, the input codebook
        the tokenizer's code vectors. ``config`` must agree with the discrete generator's fields."""
        if type(discrete) is not InterleavedGenerator:
            raise ValueError(f"Orthus is built from a discrete InterleavedGenerator, got {type(discrete).__name__}")
        shared = {field.name for field in dataclasses.fields(InterleavedConfig)}
        mine = {name: getattr(config, name) for name in shared}
        theirs = {name: getattr(discrete.config, name) for name in shared}
        if mine != theirs:
            differing = sorted(name for name in shared if mine[name] != theirs[name])
            raise ValueError(f"the Orthus config differs from the discrete generator's in {differing}; take those "
                             "fields from the discrete generator")
        model = cls(config)
        missing, unexpected = model.load_state_dict(discrete.state_dict(), strict=False)
        added = tuple(f"{name}." for name in model.added_modules())
        if unexpected or any(not key.startswith(added) for key in missing):
            raise ValueError(f"the discrete generator's weights do not fit: missing {missing}, unexpected {unexpected}")
        model.check_tokenizer(tokenizer)
        model.bind_tokenizer(tokenizer)
        return model.to(next(discrete.parameters()).device)

    # ---- tokens --------------------------------------------------------------------------------------------

    @property
    def token_spec(self) -> TokenSpec:
        """Continuous latents of the tokenizer's grid (width ``latent_dim``); no ids."""
        return TokenSpec(self.layout, None, self.config.latent_dim)

    def check_tokenizer(self, tokenizer) -> None:
        if tokenizer.vocab_size != self.vocab_size:
            raise ValueError(f"the tokenizer's codebook ({tokenizer.vocab_size}) is not the {self.vocab_size} image "
                             "codes whose embedding rows the soft input mixes; use the tokenizer of the discrete "
                             "generator")

    def bind_tokenizer(self, tokenizer) -> None:
        """The input codebook from the tokenizer's code vectors (upstream initialises ``codebook_in`` so)."""
        self.soft_embedding.reset_parameters(tokenizer.code_vectors().detach().to(self.soft_embedding.codebook_in.weight))

    def check_tokens(self, tokens: Tensor) -> None:
        expected = (self.layout.length, self.config.latent_dim)
        if not isinstance(tokens, Tensor) or not tokens.is_floating_point() or tokens.ndim != 3 \
                or tuple(tokens.shape[1:]) != expected:
            raise ValueError(f"expected image latents (b, {expected[0]}, {expected[1]}) float (the tokenizer's "
                             f"encode_latents), got {getattr(tokens, 'dtype', type(tokens).__name__)} "
                             f"{tuple(getattr(tokens, 'shape', ()))}")
        if not torch.isfinite(tokens).all():
            raise ValueError("image latents contain NaN or infinite values")

    @property
    def latent_scale(self) -> float:
        if self.config.latent_scale is None:
            raise ValueError("this Orthus generator's latent_scale is unset: set it (1 / std of the training latents) "
                             "or build it with OrthusGenerator.from_discrete")
        return self.config.latent_scale

    def image_positions(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """latents (b, l, e) -> ``<image>`` placeholder ids (b, l) and the latents."""
        ids = torch.full(images.shape[:2], self.stream.placeholder, dtype=torch.long, device=images.device)
        return ids, images

    def embed_stream(self, ids: Tensor, latents: Tensor | None = None) -> Tensor:
        """ids (b, n) and latents (b, n, e) -> (b, n, d): the token table, and at ``<image>`` positions the soft
        mixture of the image-code rows."""
        x = self.tok_embeddings(ids)
        is_image = ids == self.stream.placeholder
        if latents is None:
            if is_image.any():
                raise ValueError("the stream has <image> positions but no latents were given")
            return x
        offset = self.stream.image_offset
        rows = self.tok_embeddings.weight[offset:offset + self.vocab_size]
        return x.index_put((is_image,), self.soft_embedding(latents[is_image], rows).to(x.dtype))

    # ---- training -----------------------------------------------------------------------------------------

    def noise_schedule(self):
        """diffusers' DDPM scheduler of the config (built on first use)."""
        if self._noise_schedule is None:
            self._noise_schedule = training_scheduler(self.config)
        return self._noise_schedule

    def forward(self, tokens: Tensor, condition: Condition | Tensor, targets: Tensor | None = None, *,
                kinds: Tensor | None = None) -> OrthusOutput:
        """Teacher forcing. tokens (b, l, e) image latents, condition the prompts, kinds (b,) long (None: drawn)
        -> text cross-entropy + λ · diffusion loss (see :class:`OrthusOutput`)."""
        tokens, condition = self.checked_batch(tokens, condition, targets)
        documents = self.documents(tokens, condition, self.checked_kinds(kinds, tokens.shape[0], tokens.device))
        hidden = self.run_trunk(documents)
        logits = self.logits(hidden)
        is_image = self.stream.is_image(documents.targets)
        text_targets = documents.targets.masked_fill(is_image, IGNORE_INDEX)
        text = self.teacher_forcing_output(logits, text_targets)
        diffusion = v_prediction_loss(self.diffusion_head, documents.target_latents[is_image].float() * self.latent_scale,
                                      self.normed(hidden[is_image]), self.noise_schedule(),
                                      self.config.diffusion_repeats)
        loss = text.loss + self.config.diffusion_weight * diffusion
        metrics = {"text_accuracy": text.metrics["accuracy"], "text_loss": text.loss.detach(),
                   "diffusion_loss": diffusion.detach()}
        return OrthusOutput(loss=loss, logits=logits, metrics=metrics, text_loss=text.loss, diffusion_loss=diffusion)

    # ---- decoding -----------------------------------------------------------------------------------------

    def denoise(self, noisy: Tensor, timesteps: Tensor, condition: Tensor) -> Tensor:
        """The diffusion head: noisy latents (n, e) in diffusion space, timesteps (n,), head conditions (n, d)
        (:meth:`normed` hidden states) -> v predictions (n, e)."""
        return self.diffusion_head(noisy, timesteps, condition)

    def step(self, tokens: Tensor | None, condition: Condition | Tensor, cache: KVCache, *,
             output: Literal["logits", "hidden", "both"] = "hidden", store: bool = True) -> Tensor | StepOutput:
        """Text-to-image decoding: the prompt segment and ``<boi>`` (``tokens=None``, first call) or the next
        (b, n, e) latents -> the hidden state (b, 1, d) that conditions the head for the next latent
        (``"logits"``: the stream logits (b, 1, V); ``"both"``: a :class:`StepOutput`)."""
        return super().step(tokens, condition, cache, output=output, store=store)

    def image_step_output(self, result: StepOutput, output: Literal["logits", "hidden", "both"]) -> Tensor | StepOutput:
        """The hidden state (the head's input), the stream logits, or both."""
        if output == "hidden":
            return result.hidden
        return result if output == "both" else result.logits

def _orthus(**fields) -> OrthusConfig:
    return OrthusConfig(token_dropout=0.0, resid_dropout=0.0, ffn_dropout=0.0, **fields)


GENERATORS.add_preset("orthus-tiny", _orthus(vocab_size=64, token_grid=(4, 4), text_vocab_size=31, prompt_length=10,
                                             dim=32, num_layers=2, num_heads=2, ffn_multiple_of=32, qk_norm=True,
                                             latent_dim=4, head_width=32, head_blocks=2, diffusion_repeats=2,
                                             latent_scale=2.0, soft_temperature=0.05),
                      "2-layer Orthus test model for vq-tiny (4-d latents, a 32-wide head)")
GENERATORS.add_preset("orthus-demo", _orthus(vocab_size=256, token_grid=(8, 8), text_vocab_size=31, prompt_length=12,
                                             dim=128, num_layers=4, num_heads=4, ffn_multiple_of=64, qk_norm=True,
                                             latent_dim=8, head_width=256, head_blocks=3, diffusion_repeats=4,
                                             soft_temperature=0.05),
                      "Orthus on interleaved-demo for vq-demo: 8-d latents, a 256-wide head, 4 repeats (the toy)")
GENERATORS.add_preset("orthus-7b", OrthusConfig(vocab_size=8192, token_grid=(32, 32), text_vocab_size=57339,
                                                prompt_length=1024, dim=4096, num_layers=32, num_heads=32,
                                                ffn_multiple_of=256, qk_norm=True, token_dropout=0.0, resid_dropout=0.0,
                                                ffn_dropout=0.0, latent_dim=256, head_width=1536, head_blocks=3,
                                                diffusion_repeats=8, latent_scale=0.1, soft_temperature=1.0),
                      "Orthus-7B: Chameleon-7B's trunk, MAR's head (1536 wide, 3 blocks), 8 repeats, latents x 0.1, "
                      "tau 1 (512 px, 32x32 latents of 256)")
