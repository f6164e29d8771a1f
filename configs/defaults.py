"""The configuration schema: every key, its type and its default, with comments.

Defaults reproduce the authors' code at HEAD (the golden files). The per-dataset YAML
files layer the paper's values on top (docs/method.md lists where paper and code
differ); ``*_authors_code.yaml`` variants keep these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Tuple

# The reference tokenizer's vocabulary (datasets/tokenizer.py builds it and checks its length):
# the text tower's token embedding and the MLM classes of random-init models.
VOCAB_SIZE = 49408
# CLIP's text context: the tokens per caption (data.text_length) and the text tower's positions.
CONTEXT_LENGTH = 77


@dataclass
class ModelConfig:
    # CLIP weights: a path to OpenAI's ViT-B-16.pt (TorchScript) or to an OpenAI-format
    # state dict / open_clip checkpoint; "open_clip:MODEL/TAG" downloads through
    # open_clip; "none" = random init with the sizes below (tests, synthetic quick start).
    pretrain: str = "data/ViT-B-16.pt"
    # Then initialise from an FMFA-layout checkpoint (the reference's keys, e.g. Re-ID-domain
    # pre-training such as HAM or MLLM4Text-ReID): matching weights are copied, the rest kept
    # and reported (loaded / new / ignored). "" = none.
    init_from: str = ""
    image_size: List[int] = field(default_factory=lambda: [384, 128])  # H, W; multiples of patch_size
    # Sizes used only when pretrain == "none" (loaded weights bring their own): ViT-B/16.
    embed_dim: int = 512
    vision_width: int = 768
    vision_layers: int = 12
    patch_size: int = 16
    text_width: int = 512
    text_layers: int = 12
    context_length: int = CONTEXT_LENGTH
    vocab_size: int = VOCAB_SIZE
    temperature: float = 0.02  # fixed; logit scale = 1 / temperature = 50
    cmt_depth: int = 4  # layers of the IRR cross-modal transformer
    # Outputs of the ID classifier: "captions" = the number of training captions, as the
    # authors' train.py sizes it (68,126 on CUHK-PEDES; labels stay the identity indices, so
    # the extra outputs are never targets); "identities" = the number of training identities.
    id_classes: str = "captions"
    # Activation (gradient) checkpointing of the transformer blocks of both CLIP towers and
    # of the IRR cross-modal transformer: each block's activations are recomputed during the
    # backward pass instead of kept (open_clip's non-reentrant torch.utils.checkpoint).
    # Same values and gradients; much less training memory for about one more forward pass
    # of compute (docs/memory.md). false = the reference.
    grad_checkpointing: bool = False


@dataclass
class LossConfig:
    # Enabled losses, a subset of LOSS_SPECS below (itc, sdm, a-sdm, cmpm, id, mlm, efa), written
    # as a list or "+"-joined (loss.names=sdm+mlm+id). Paper: a-sdm+mlm+id+efa.
    names: List[str] = field(default_factory=lambda: ["a-sdm", "mlm", "id", "efa"], metadata={"plus_joined": True})
    # Weight per loss name; a name not listed gets 1.0.
    weights: Dict[str, float] = field(default_factory=dict)


ASDM_MODES = ("cosine", "probability")


@dataclass
class AsdmConfig:
    """Settings of the A-SDM loss ('a-sdm')."""

    factor: float = 0.1  # code at HEAD 0.1; paper alpha = 10 (1 on RSTPReid); earlier code 10
    mode: str = "cosine"  # "cosine" gap (code) or "probability" gap (paper)

    def requirements(self) -> List[Tuple[bool, str, str]]:
        """(holds, setting, what is allowed) for each checked setting."""
        return [(self.mode in ASDM_MODES, "mode", f"one of {', '.join(ASDM_MODES)}")]


@dataclass
class EfaConfig:
    """Settings of the EFA loss ('efa'): each one a keyword of ``model.objectives.efa_loss``."""

    text_margin: float = 0.1  # text -> joint; paper: CUHK 0.1, ICFG 0.2, RSTPReid 0.2
    image_margin: float = 0.9  # image -> joint; paper: CUHK 0.1, ICFG 1.0, RSTPReid 0.8
    lse_lambda: float = 1.0  # LSE pooling sharpness; earlier code release: 10 (exp(max / 0.1))
    threshold: float = 1.0  # sparsification threshold sigma, in units of 1/N (N = patches)
    block_elems: int = 4194304  # memory bound of the blockwise set similarity (no effect on values)

    def requirements(self) -> List[Tuple[bool, str, str]]:
        """(holds, setting, what is allowed) for each checked setting."""
        return [
            (self.text_margin >= 0, "text_margin", ">= 0"),
            (self.image_margin >= 0, "image_margin", ">= 0"),
            (self.threshold >= 0, "threshold", ">= 0"),
            (self.lse_lambda > 0, "lse_lambda", "> 0"),
            (self.block_elems >= 1, "block_elems", ">= 1"),
        ]


@dataclass(frozen=True)
class LossSpec:
    """A loss that ``loss.names`` may enable, declared once: its function, the heads it needs,
    whether its batches carry MLM-masked captions, and the section of :class:`Config` holding
    its settings. How to add one: docs/training.md, "Adding a loss"."""

    # Its function in model/loss.py, by name: (criterion, model outputs, batch) -> (loss, metrics).
    function: str
    # The heads model.build.build_model adds for it: "id_classifier", "irr".
    heads: Tuple[str, ...] = ()
    # Batches carry MLM-masked captions (mlm_ids, mlm_labels; datasets.build).
    masked_captions: bool = False
    # Its settings section ("" = none): validated at load, read by its function as criterion.<section>.
    settings: str = ""


LOSS_SPECS = {
    "itc": LossSpec("itc_term"),
    "sdm": LossSpec("sdm_term"),
    "a-sdm": LossSpec("asdm_term", settings="asdm"),
    "cmpm": LossSpec("cmpm_term"),
    "efa": LossSpec("efa_term", settings="efa"),
    "id": LossSpec("id_term", heads=("id_classifier",)),
    "mlm": LossSpec("mlm_term", heads=("irr",), masked_captions=True),
}
LOSS_NAMES = tuple(LOSS_SPECS)
# Every settings section of the table (each one validated and passed on, its loss enabled or not).
LOSS_SETTINGS = tuple(dict.fromkeys(spec.settings for spec in LOSS_SPECS.values() if spec.settings))


def heads_needed(names: Iterable[str]) -> Tuple[str, ...]:
    """The heads the enabled losses ``names`` need, in order of first mention."""
    return tuple(dict.fromkeys(head for name in names for head in LOSS_SPECS[name].heads))


def masked_captions_needed(names: Iterable[str]) -> bool:
    """Whether an enabled loss of ``names`` needs MLM-masked captions in its batches."""
    return any(LOSS_SPECS[name].masked_captions for name in names)


@dataclass
class DataConfig:
    # Dataset names: CUHK-PEDES, ICFG-PEDES, RSTPReid, Synthetic-PEDES (CUHK-PEDES format,
    # made by `python -m datasets.synthetic`). Each lives in ROOT/<name>/ (docs/method.md, "Data").
    # Any other name is your own data: ROOT/<name>/annotations.json (records {"id", "file_path"
    # | "img_path", "captions", "split"}; no split = test) with the images under ROOT/<name>/imgs/
    # (README "Your own data"; `python -m datasets.make_annotations` writes it from a CSV).
    root: str = "data"
    dataset: str = "CUHK-PEDES"
    train_split: str = "train"
    batch_size: int = 64
    sampler: str = "random"  # "random" (paper) or "identity" (P identities x K instances)
    num_instance: int = 4  # K of the identity sampler
    augment: bool = True  # flip + pad/crop + random erasing (the paper's runs: on)
    # true = the authors' data code: the caption is MLM-masked in place, so the global losses
    # (A-SDM, ID, EFA) see the masked caption too (caption_ids == mlm_ids) and the text tower
    # runs once per batch; false = the clean caption for the global losses (the papers' text).
    share_masked_caption: bool = True
    text_length: int = CONTEXT_LENGTH
    # Train on a sharded corpus instead of data.dataset's train split: the folder that
    # `python -m datasets.write_shards` wrote (docs/pretraining.md); data.dataset is still the
    # evaluated one. "" = the files of data.dataset (the reference).
    shards: str = ""
    # With data.shards: image-caption pairs per epoch (the schedule's unit); 0 = one pass over the corpus.
    shard_epoch_samples: int = 0
    # With data.shards: pairs each loader worker holds, yielding one drawn at random per pair read.
    shuffle_buffer: int = 10000
    # With data.shards on several processes: "batches" = every rank reads the one-process run's
    # stream and keeps its share of each global batch (the run equals one process'; each rank
    # decodes only its images); "blocks" = each rank reads only its own contiguous block of the
    # epoch (fewer bytes read per rank, but other global batches: a different training per
    # process count). docs/pretraining.md, "Several machines".
    shard_split: str = "batches"
    num_workers: int = 8
    pin_memory: bool = True
    persistent_workers: bool = True
    # true: training drops each epoch's last partial batch, so every step has one batch size
    # (torch.compile then compiles once); false = the authors' code, which trains on it.
    drop_last: bool = False


@dataclass
class SolverConfig:
    optimizer: str = "Adam"  # Adam, AdamW or SGD
    lr: float = 5e-6  # authors' CUHK-PEDES log; paper text: 1e-5
    weight_decay: float = 4e-5
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-3  # the reference's Adam epsilon (chosen for fp16 weights)
    momentum: float = 0.9  # SGD only
    # Per-group factors (1.0 = the paper: one lr and weight decay for every parameter).
    # "New" modules are the heads absent from CLIP (IRR, MLM head, ID classifier).
    new_module_lr_factor: float = 1.0
    bias_lr_factor: float = 1.0
    bias_weight_decay: float = -1.0  # < 0: same as weight_decay
    fused: bool = False  # fused/foreach optimizer kernels where the device supports them
    # Schedule, a function of the epoch: warm-up then "cosine", "step", "linear",
    # "exponential" or "poly".
    scheduler: str = "cosine"
    epochs: int = 60
    warmup_epochs: int = 5
    warmup_factor: float = 0.1  # warm-up starts at warmup_factor x lr
    warmup_method: str = "linear"  # "linear" or "constant"
    milestones: List[int] = field(default_factory=lambda: [20, 50])  # step
    gamma: float = 0.1  # step and exponential
    power: float = 0.9  # poly
    target_lr: float = 0.0  # cosine/linear/poly end value


@dataclass
class TrainConfig:
    output_dir: str = ""  # run folder; "" = runs/<dataset>/<YYYYmmdd_HHMMSS>_<name>[_<torchrun job id>]
    name: str = "fmfa"
    seed: int = 1
    device: str = "auto"  # "auto" = cuda when available, else cpu
    # fp32 | amp_bf16 | amp_fp16 (fp32 weights, loss scaling) | pure_fp16 (the authors':
    # half weights, fp16 autocast, no loss scaling).
    precision: str = "pure_fp16"
    log_period: int = 50  # steps between logged/TensorBoard losses
    eval_period: int = 1  # epochs between evaluations
    resume: str = ""  # a run folder or a last.pth to continue from
    auto_resume: bool = False  # continue from output_dir/last.pth when it exists (torchrun restarts always do)
    # Also write last.pth every N optimisation steps inside an epoch, with the position reached
    # (batches trained, loss sums, the loader's layout): a resumed run continues at the next
    # sample, with the weights of an unbroken run. 0 = only after each epoch.
    checkpoint_every_steps: int = 0
    # Repeatable runs on the same machine: deterministic algorithms (an error names any op
    # without one), no cuDNN autotuning; data order and augmentation are seeded either way.
    deterministic: bool = False
    # TF32 tensor cores for float32 matrix products and convolutions on GPUs that have them
    # (Ampere and newer): the default of the authors' torch (1.9: on), off since torch 1.12.
    # Off under train.deterministic. Touches what runs in float32: the fp32/amp modes' matmuls
    # and every mode's float32 losses. CPU: no effect.
    tf32: bool = True
    # torch.compile the training forward (its measured time and memory: docs/memory.md).
    # Evaluation and checkpoints use the plain module; the first steps are slow while it
    # compiles.
    compile: bool = False
    # Several processes (torchrun): true = the batch-coupled losses (SDM/A-SDM, ITC, CMPM,
    # EFA) compare every sample of the global batch (data.batch_size) with every other, and
    # ID/MLM are global means: the same training as one process with that batch (the
    # reference). false = each rank's losses see only its own share (a deviation, IRRA's DDP).
    global_batch_losses: bool = True
    # How long a collective waits for the slowest rank (torch.distributed's process-group
    # timeout), e.g. the other ranks for rank 0's evaluation and checkpoint writing. NCCL's
    # own default, 10 minutes, can be shorter than a cross-domain evaluation plus a 1.35 GB
    # last.pth written to a slow disk.
    dist_timeout_minutes: float = 60.0


@dataclass
class EvalConfig:
    # The reference selects its best epoch on the test split (its reported protocol);
    # "val" gives a clean model selection on datasets that have one.
    split: str = "test"
    cross_domain: List[str] = field(default_factory=list)  # other datasets evaluated too (built-in or your own)
    batch_size: int = 512
    query_chunk: int = 256  # queries ranked at once on the device (docs/performance.md, 'Ranking')
    i2t: bool = False  # also report image-to-text
    at_start: bool = False  # also evaluate the untrained model (epoch 0) before training


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    asdm: AsdmConfig = field(default_factory=AsdmConfig)
    efa: EfaConfig = field(default_factory=EfaConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
