"""Run profiles: one table of sizes and schedules, resolved once per notebook.

A notebook passes its ``profile`` parameter ("smoke", "cpu", "gpu" or "auto")
and any explicit overrides to ``resolve_profile``. "auto" becomes the value of
the environment variable COURSEKIT_PROFILE when that is set, else "gpu" when
CUDA is available and "cpu" otherwise. An override that is not None always
wins over the profile's value. Introduced in notebooks/00_baseline.ipynb.
"""

from __future__ import annotations

import copy
import inspect
import os

from .runsettings import DRY_RUN_ENV, dry_run_steps  # noqa: F401  (re-exported: where profiles' users look)

__all__ = ["PROFILES", "PROFILE_NAMES", "Profile", "resolve_profile", "profile_name", "dry_run_steps", "DRY_RUN_CAPS",
           "DRY_RUN_ENV", "GPU_PROFILE_NOTE"]

# Every size and schedule the notebooks use lives here, and only here.
# train_per_class / test_per_class: cap on images per class (None = all).
# base_model: the model 00_baseline trains and later chapters reuse as teacher.
# small_model: the much smaller ResNet 00_baseline measures beside it.
# crop_pad: padding of the random-crop augmentation (short schedules prefer less).
# transfer_backbone_lr_factor: backbone lr = factor * lr when fine-tuning with few labels (01); a setting, not
#   compared in the notebooks: tune it on a validation split, never on the test split.
# pipeline_backbone_lr_factor: the same for 06's teacher, fine-tuned on all target labels. Exploratory runs on the
#   validation split, not shown in the notebooks: 0.25 and 1.0 within 0.3 points of each other after 6 epochs,
#   0.025 far behind; the smaller of the two keeps the backbone nearer the source weights.
# Settings that are the same in every profile, stated once.
SHARED: dict = {
    "weight_decay": 5e-4,
    "label_smoothing": 0.1,
    # flip test-time augmentation doubles the forward passes that latency does not time: accuracy beside a latency
    # is one pass (00_baseline shows TTA's gain and cost)
    "tta": False,
    "transfer_backbone_lr_factor": 0.025,
    "kd_hint": True,
    "finetune_lr_factor": 0.25,
    "pipeline_backbone_lr_factor": 0.25,
    "text_lr": 1e-4,
    "text_scratch_lr": 3e-4,
    "text_sweep_batch_size": 16,
    "lora_rank": 8,
    "lora_lr": 1e-3,
    "text_student_layers": 3,
    "text_head_keep": 0.5,  # 09: fraction of all attention heads kept (at least one per layer)
    "text_ffn_keep": 0.5,  # 09: fraction of each layer's FFN neurons kept
    "text_layers_removed": 3,  # 09: layers removed from the 6-layer teacher (equal budget to the width cut)
    "text_recipe_layers_removed": 1,  # 09: layers trimmed from the pruned student at the recipe's last step
    "text_recovery_fraction": 1.0,  # 09: share of the training sentences (seeded) each recovery sees
    "llm_num_layers": 30,  # 10: SmolLM2-135M's layers (checked against the loaded model)
    "llm_window": 256,  # 10: perplexity window (disjoint windows)
    "llm_heal_lr": 1e-4,
    "amp": "auto",
    "channels_last": True,
}

PROFILES: dict[str, dict] = {
    "smoke": {
        **SHARED,
        "train_per_class": 30,
        "test_per_class": 10,
        "exercise_judge": "none",  # models too small for the size budgets, validation sets for the accuracies
        "val_fraction": 0.2,
        "batch_size": 64,
        "epochs": 1,
        "lr": 0.2,
        "crop_pad": 2,
        "base_model": {"name": "resnet_cifar", "blocks": [1, 1, 1], "width": 8, "stem_pool": True},
        "small_model": {"name": "resnet_cifar", "blocks": [1, 1, 1], "width": 4, "stem_pool": True},
        "latency_batch_sizes": [1, 8],
        "latency_min_time": 0.02,
        "latency_rounds": 1,  # interleaved rounds behind each ledger record's latency (Session.record_all, record_text)
        # 01_transfer_learning
        "source_epochs": 1,
        "transfer_steps": 4,
        "transfer_batch_size": 32,
        "transfer_seeds": 2,
        "transfer_label_sweep": [5, 10],
        "imagenet_train_per_class": 4,
        "imagenet_steps": 2,
        # 02_knowledge_distillation
        "student_model": {"name": "resnet_cifar", "blocks": [1, 1, 1], "width": 4, "stem_pool": True},
        "kd_train_per_class": 30,
        "kd_epochs": 1,
        "kd_seeds": 2,
        "kd_sweep_temperatures": [2.0],
        "kd_sweep_alphas": [0.5],
        # 03-06: fine-tuning after compression uses lr * finetune_lr_factor
        # 03_pruning_unstructured
        "prune_sweep": [0.0, 0.5, 0.9],
        "prune_finetune_sparsities": [0.8],
        "prune_finetune_epochs": 1,
        "prune_seeds": 1,
        "sensitivity_amounts": [0.5, 0.9],
        # 04_pruning_structured
        "channel_ratio": 0.5,
        "channel_finetune_epochs": 1,
        "channel_sensitivity_ratios": [0.5],
        # 05_layer_trimming
        "trim_model": {"name": "resnet_cifar", "blocks": [2, 1, 1], "width": 8, "stem_pool": True},
        "trim_blocks_to_remove": 1,
        "trim_recovery_epochs": 1,
        # 06_pipeline: teacher = source model fine-tuned on the target classes; student distilled, pruned, trimmed
        "pipeline_teacher_epochs": 1,
        "pipeline_student_model": {"name": "resnet_cifar", "blocks": [1, 1, 1], "width": 8, "stem_pool": True},
        "pipeline_kd_epochs": 1,
        "pipeline_channel_ratio": 0.5,
        "pipeline_blocks_to_remove": 1,
        "pipeline_recovery_epochs": 1,
        # Part 2, text (07, 08): MiniLM on SST-2 / TREC; token embeddings stay frozen when fine-tuning
        "text_attention": "eager",  # see the cpu profile
        "text_max_length": 64,
        "text_train_limit": 96,
        "text_test_limit": 64,
        "text_batch_size": 16,
        "text_epochs": 1,
        "text_label_sweep": [8],
        "text_sweep_steps": 2,
        "text_seeds": 1,
        "text_probe_epochs": 20,
        "text_latency_batch": 4,
        "text_latency_seq": 16,
        "text_kd_epochs": 1,
        "text_kd_seeds": 2,
        "text_kd_hidden_seeds": 1,
        "text_kd_from_teacher": True,
        "text_recovery_epochs": 1,  # 09: KD epochs after each cut
        "llm_eval_tokens": 256,  # 10: first N tokens of WikiText-2 test and Tiny Shakespeare (None: all): one window
        "llm_calib_tokens": 256,  # 10: WikiText-2 valid tokens for layer scores and Wanda norms
        "llm_layers_removed": [3],  # 10: the depth sweep
        "llm_heal_steps": 2,
        "llm_heal_batch": 2,
        "llm_heal_seq": 64,
        "llm_heal_tokens": 4096,  # 10: healing windows are drawn from the first N tokens of WikiText-2 valid
        "llm_prompt_len": 32,  # 10: prefill latency prompt
        "llm_decode_tokens": 4,  # 10: tokens generated per decode timing
        "llm_gen_tokens": 8,  # 10: tokens of each sample continuation
    },
    "cpu": {
        **SHARED,
        "train_per_class": None,
        "test_per_class": None,
        # what each chapter's numeric-target exercise judges (checks.check_target): "all", "size" or "none"
        "exercise_judge": "all",
        "val_fraction": 0.1,
        "batch_size": 256,
        "epochs": 6,
        "lr": 0.4,
        "crop_pad": 2,
        "base_model": {"name": "resnet_cifar", "blocks": [1, 1, 1], "width": 24, "stem_pool": True},
        "small_model": {"name": "resnet_cifar", "blocks": [1, 1, 1], "width": 8, "stem_pool": True},
        "latency_batch_sizes": [1, 64],
        "latency_min_time": 0.3,
        "latency_rounds": 3,
        # 01_transfer_learning
        "source_epochs": 12,
        "transfer_steps": 150,
        "transfer_batch_size": 64,
        "transfer_seeds": 2,
        "transfer_label_sweep": [10, 250, 1000],
        "imagenet_train_per_class": 100,
        "imagenet_steps": 100,
        # 02_knowledge_distillation
        "student_model": {"name": "resnet_cifar", "blocks": [1, 1, 1], "width": 6, "stem_pool": True},
        "kd_train_per_class": 1000,
        "kd_epochs": 10,
        "kd_seeds": 2,
        "kd_sweep_temperatures": [1.0, 8.0],
        "kd_sweep_alphas": [0.5],
        # 03-06: fine-tuning after compression uses lr * finetune_lr_factor
        # 03_pruning_unstructured
        "prune_sweep": [0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98],
        "prune_finetune_sparsities": [0.8, 0.95],
        "prune_finetune_epochs": 1,
        "prune_seeds": 2,
        "sensitivity_amounts": [0.5, 0.7, 0.9, 0.95],
        # 04_pruning_structured
        "channel_ratio": 0.33,
        "channel_finetune_epochs": 2,
        "channel_sensitivity_ratios": [0.25, 0.5, 0.75],
        # 05_layer_trimming
        "trim_model": {"name": "resnet_cifar", "blocks": [2, 2, 2], "width": 16, "stem_pool": True},
        "trim_blocks_to_remove": 2,
        "trim_recovery_epochs": 1,
        # 06_pipeline: teacher = source model fine-tuned on the target classes; student distilled, pruned, trimmed
        "pipeline_teacher_epochs": 6,
        "pipeline_student_model": {"name": "resnet_cifar", "blocks": [1, 1, 1], "width": 16, "stem_pool": True},
        "pipeline_kd_epochs": 8,
        "pipeline_channel_ratio": 0.6,
        "pipeline_blocks_to_remove": 1,
        "pipeline_recovery_epochs": 3,
        # Part 2, text (07, 08): MiniLM on SST-2 / TREC; token embeddings stay frozen when fine-tuning
        # text_attention: BERT attention kernel of Part 2 (07-09). "eager" on CPUs: PyTorch's CPU flash-attention
        #   backward made a training step 1.3-1.6x slower on this course's 2-core machine (MiniLM, batch 32, bf16)
        "text_attention": "eager",
        "text_max_length": 128,
        "text_train_limit": None,
        "text_test_limit": None,
        "text_batch_size": 32,
        "text_epochs": 1,
        "text_label_sweep": [8, 32, 128],
        "text_sweep_steps": 20,
        "text_seeds": 2,
        "text_probe_epochs": 200,
        "text_latency_batch": 32,
        "text_latency_seq": 64,
        "text_kd_epochs": 1,
        "text_kd_seeds": 3,
        "text_kd_hidden_seeds": 1,
        "text_kd_from_teacher": False,  # 08: a student copied from the fine-tuned teacher too (no room in 5 minutes)
        "text_recovery_epochs": 1,  # 09: KD epochs after each cut
        "llm_eval_tokens": 4096,  # 10: first N tokens of WikiText-2 test and Tiny Shakespeare (None: all)
        "llm_calib_tokens": 2048,  # 10: WikiText-2 valid tokens for layer scores and Wanda norms
        "llm_layers_removed": [3, 6, 9],  # 10: the depth sweep
        "llm_heal_steps": 40,
        "llm_heal_batch": 4,
        "llm_heal_seq": 128,
        "llm_heal_tokens": 65536,  # 10: healing windows are drawn from the first N tokens of WikiText-2 valid
        "llm_prompt_len": 256,  # 10: prefill latency prompt
        "llm_decode_tokens": 32,  # 10: tokens generated per decode timing
        "llm_gen_tokens": 30,  # 10: tokens of each sample continuation
    },
    "gpu": {
        **SHARED,
        "train_per_class": None,
        "test_per_class": None,
        # the targets were set on the cpu profile; the dry run checked that the gpu profile's models fit the size
        # budgets, but no GPU run has measured its accuracies: the size is judged, the accuracy reported
        "exercise_judge": "size",
        "val_fraction": 0.1,
        "batch_size": 512,
        "epochs": 40,
        "lr": 0.8,
        "crop_pad": 4,
        "base_model": {"name": "resnet_cifar", "blocks": [2, 2, 2], "width": 64, "stem_pool": False},
        "small_model": {"name": "resnet_cifar", "blocks": [1, 1, 1], "width": 16, "stem_pool": False},
        "latency_batch_sizes": [1, 64, 256],
        "latency_min_time": 0.5,
        "latency_rounds": 3,
        # 01_transfer_learning
        "source_epochs": 30,
        "transfer_steps": 600,
        "transfer_batch_size": 128,
        "transfer_seeds": 3,
        "transfer_label_sweep": [10, 250, 1000, None],
        "imagenet_train_per_class": None,
        "imagenet_steps": 2000,
        # 02_knowledge_distillation
        "student_model": {"name": "resnet_cifar", "blocks": [1, 1, 1], "width": 16, "stem_pool": False},
        "kd_train_per_class": None,
        "kd_epochs": 30,
        "kd_seeds": 3,
        "kd_sweep_temperatures": [1.0, 2.0, 8.0],
        "kd_sweep_alphas": [0.5, 0.99],
        # 03-06: fine-tuning after compression uses lr * finetune_lr_factor
        # 03_pruning_unstructured
        "prune_sweep": [0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98],
        "prune_finetune_sparsities": [0.5, 0.8, 0.9, 0.95],
        "prune_finetune_epochs": 5,
        "prune_seeds": 3,
        "sensitivity_amounts": [0.5, 0.7, 0.9, 0.95],
        # 04_pruning_structured
        "channel_ratio": 0.33,
        "channel_finetune_epochs": 10,
        "channel_sensitivity_ratios": [0.25, 0.5, 0.75],
        # 05_layer_trimming
        "trim_model": {"name": "resnet_cifar", "blocks": [3, 3, 3], "width": 32, "stem_pool": False},
        "trim_blocks_to_remove": 3,
        "trim_recovery_epochs": 8,
        # 06_pipeline: teacher = source model fine-tuned on the target classes; student distilled, pruned, trimmed
        "pipeline_teacher_epochs": 15,
        "pipeline_student_model": {"name": "resnet_cifar", "blocks": [2, 2, 2], "width": 32, "stem_pool": False},
        "pipeline_kd_epochs": 30,
        "pipeline_channel_ratio": 0.5,
        "pipeline_blocks_to_remove": 2,
        "pipeline_recovery_epochs": 10,
        # Part 2, text (07, 08): MiniLM on SST-2 / TREC; token embeddings stay frozen when fine-tuning
        "text_attention": "sdpa",  # fused attention kernels on CUDA
        "text_max_length": 128,
        "text_train_limit": None,
        "text_test_limit": None,
        "text_batch_size": 32,
        "text_epochs": 3,
        "text_label_sweep": [8, 32, 128, 512],
        "text_sweep_steps": 100,
        "text_seeds": 3,
        "text_probe_epochs": 300,
        "text_latency_batch": 32,
        "text_latency_seq": 64,
        "text_kd_epochs": 3,
        "text_kd_seeds": 5,
        "text_kd_hidden_seeds": 5,
        "text_kd_from_teacher": True,
        "text_recovery_epochs": 3,  # 09: KD epochs after each cut
        "llm_eval_tokens": None,  # 10: first N tokens of WikiText-2 test and Tiny Shakespeare (None: all)
        "llm_calib_tokens": 16384,  # 10: WikiText-2 valid tokens for layer scores and Wanda norms
        "llm_layers_removed": [3, 6, 9, 12],  # 10: the depth sweep
        "llm_heal_steps": 400,
        "llm_heal_batch": 8,
        "llm_heal_seq": 256,
        "llm_heal_tokens": None,  # 10: healing windows are drawn from the first N tokens of WikiText-2 valid
        "llm_prompt_len": 256,  # 10: prefill latency prompt
        "llm_decode_tokens": 64,  # 10: tokens generated per decode timing
        "llm_gen_tokens": 40,  # 10: tokens of each sample continuation
    },
}
PROFILE_NAMES = ("smoke", "cpu", "gpu", "auto")


class Profile(dict):
    """A resolved profile: a dict whose keys also read as attributes (``p.epochs``)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"profile has no setting {key!r}; settings: {', '.join(sorted(self))}") from None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


GPU_PROFILE_NOTE = ("the gpu profile's accuracies have not been measured on a GPU yet (its configuration is checked by a "
                    "dry run on the CPU); the course's figures come from the cpu profile")


def profile_name(profile: str = "auto") -> str:
    """The profile ``profile`` stands for: itself, or for "auto" $COURSEKIT_PROFILE when set, else "gpu" when CUDA is
    available and "cpu" when not. ValueError for an unknown name."""
    if profile not in PROFILE_NAMES:
        raise ValueError(f"profile: unknown value {profile!r}; allowed: {', '.join(PROFILE_NAMES)}")
    if profile != "auto":
        return profile
    env = os.environ.get("COURSEKIT_PROFILE", "").strip()
    if env:
        if env not in PROFILES:
            raise ValueError(f"COURSEKIT_PROFILE: unknown value {env!r}; allowed: {', '.join(PROFILES)}")
        return env
    return "gpu" if _cuda_available() else "cpu"


def resolve_profile(profile: str = "auto", **overrides) -> Profile:
    """Return the settings of ``profile`` with every non-None override applied.

    Args:
        profile: "smoke", "cpu", "gpu" or "auto".
        **overrides: settings from the table above; None means "use the profile's".
    Returns:
        Profile with a ``name`` key holding the resolved profile name.
    Raises:
        ValueError for an unknown profile or setting, or "gpu" without CUDA.
    """
    name = profile_name(profile)
    dry = dry_run_steps()
    if name == "gpu" and not _cuda_available() and dry is None:
        raise ValueError(
            "profile: 'gpu' needs CUDA, and torch.cuda.is_available() is False on this machine; "
            "use 'cpu' or 'auto' (or COURSEKIT_DRY_RUN=<steps> to check the gpu profile's configuration on the CPU)"
        )
    settings = Profile(copy.deepcopy(PROFILES[name]))
    unknown = sorted(k for k in overrides if k not in settings)
    if unknown:
        raise ValueError(f"unknown profile setting(s) {unknown}; allowed: {', '.join(sorted(settings))}")
    settings.update({k: v for k, v in overrides.items() if v is not None})
    _validate_settings(settings)
    if dry is not None:  # after validation: the caps are not the profile's values, and say so in "dry_run"
        settings.update({k: v for k, v in DRY_RUN_CAPS.items() if k in settings})
        settings["dry_run"] = {"max_train_steps": dry, "caps": dict(DRY_RUN_CAPS)}
    settings["name"] = name
    return settings


# COURSEKIT_DRY_RUN=<steps>: run a profile's models, ratios and settings with every training loop stopped after
# <steps> optimizer steps and the data capped to a few batches (below), on whatever device there is, the gpu profile
# included on a CPU. It checks configuration (shapes, ratios that divide, cells that run), never results: every
# environment report says "dry_run", and nothing it prints is a figure of the course. tests/test_gpu_dry_run.py.
DRY_RUN_CAPS: dict = {
    "train_per_class": 24, "test_per_class": 4, "kd_train_per_class": 24, "imagenet_train_per_class": 4,
    "batch_size": 16, "transfer_batch_size": 16, "latency_batch_sizes": [1, 2], "latency_min_time": 0.001,
    "latency_rounds": 1,
    "transfer_label_sweep": [10],  # 01: one point besides labels_per_class; more labels only add images to push through
    "text_label_sweep": [8, 32],  # 07: with 48 training sentences, 128 and 512 per class are the same sentences again
    "text_train_limit": 48, "text_test_limit": 24, "text_batch_size": 8, "text_sweep_batch_size": 8,
    "text_latency_batch": 2, "text_latency_seq": 16,
    "llm_eval_tokens": 256, "llm_calib_tokens": 256, "llm_heal_tokens": 4096, "llm_heal_batch": 2, "llm_heal_seq": 64,
    "llm_prompt_len": 32, "llm_decode_tokens": 4, "llm_gen_tokens": 8,
    "exercise_judge": "size",  # a few steps of training: accuracies mean nothing, the profile's sizes still count
}


_POSITIVE_INTS = ("epochs", "batch_size", "latency_rounds",
                  "source_epochs", "transfer_steps", "transfer_batch_size", "transfer_seeds",
                  "kd_epochs", "kd_seeds", "imagenet_steps", "prune_finetune_epochs", "prune_seeds",
                  "channel_finetune_epochs", "trim_recovery_epochs", "pipeline_teacher_epochs", "pipeline_kd_epochs",
                  "pipeline_recovery_epochs", "text_max_length", "text_batch_size", "text_epochs", "text_sweep_steps",
                  "text_sweep_batch_size", "text_seeds", "text_probe_epochs", "lora_rank", "text_latency_batch",
                  "text_latency_seq", "text_student_layers", "text_kd_epochs", "text_kd_seeds",
                  "text_kd_hidden_seeds", "text_recovery_epochs", "llm_num_layers",
                  "llm_window", "llm_calib_tokens", "llm_heal_steps", "llm_heal_batch", "llm_heal_seq", "llm_prompt_len",
                  "llm_decode_tokens", "llm_gen_tokens")
_FRACTIONS = ("val_fraction", "label_smoothing", "channel_ratio", "pipeline_channel_ratio")
_POSITIVE_NUMBERS = ("lr", "finetune_lr_factor", "pipeline_backbone_lr_factor", "text_lr", "text_scratch_lr", "lora_lr",
                     "llm_heal_lr", "transfer_backbone_lr_factor", "latency_min_time")
_AMP_VALUES = ("auto", "bf16", "fp16", "off")
_TEXT_ATTENTION = ("eager", "sdpa")
EXERCISE_JUDGE = ("all", "size", "none")  # what checks.check_target judges: both targets, the size only, nothing
_MODEL_SPECS = ("base_model", "small_model", "student_model", "trim_model", "pipeline_student_model")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _validate_list(key: str, v, ok, what: str, allow_empty: bool = False) -> None:
    if not isinstance(v, (list, tuple)) or (not v and not allow_empty) or not all(ok(a) for a in v):
        raise ValueError(f"{key}: {v!r} is not allowed; use a {'' if allow_empty else 'non-empty '}list of {what}")


def _validate_model_spec(key: str, spec) -> None:
    """A model spec must name a known model and give only arguments its builder takes (checked without building)."""
    from .models import MODEL_BUILDERS  # lazily: models imports torchvision, profiles only needs it here

    if not isinstance(spec, dict) or spec.get("name") not in MODEL_BUILDERS:
        raise ValueError(f"{key}: {spec!r} is not allowed; use a dict with 'name' one of {', '.join(MODEL_BUILDERS)}")
    params = inspect.signature(MODEL_BUILDERS[spec["name"]]).parameters
    unknown = [a for a in spec if a != "name" and a not in params]
    if unknown:
        raise ValueError(f"{key}: {spec['name']} takes no argument(s) {unknown}; allowed: {', '.join(params)}")
_FRACTION_LISTS = ("prune_sweep", "prune_finetune_sparsities", "sensitivity_amounts", "channel_sensitivity_ratios")


def _validate_settings(settings: dict) -> None:
    """Refuse values no notebook can run with, naming the setting, before any work starts."""
    for key in _POSITIVE_INTS:
        v = settings[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{key}: {v!r} is not allowed; use an integer >= 1")
    for key in _FRACTIONS:
        v = settings[key]
        if not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise ValueError(f"{key}: {v!r} is outside the allowed range [0, 1)")
    for key in _FRACTION_LISTS:
        v = settings[key]
        if not isinstance(v, (list, tuple)) or not v or not all(isinstance(a, (int, float)) and 0 <= a < 1 for a in v):
            raise ValueError(f"{key}: {v!r} is not allowed; use a non-empty list of numbers in [0, 1)")
    for key in ("trim_blocks_to_remove", "pipeline_blocks_to_remove"):
        v = settings[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"blocks_to_remove: {v!r} is not allowed; use an integer >= 0 (profile setting {key})")
    for key in _POSITIVE_NUMBERS:
        if not isinstance(settings[key], (int, float)) or isinstance(settings[key], bool) or not settings[key] > 0:
            raise ValueError(f"{key}: {settings[key]!r} is not allowed; use a positive number")
    for key in ("text_head_keep", "text_ffn_keep", "text_recovery_fraction"):
        v = settings[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise ValueError(f"{key}: {v!r} is not allowed; use a fraction in (0, 1]")
    for key in ("text_layers_removed", "text_recipe_layers_removed"):
        v = settings[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{key}: {v!r} is not allowed; use an integer >= 0 (fewer than the model's layers)")
    if settings["text_attention"] not in _TEXT_ATTENTION:
        raise ValueError(f"text_attention: unknown value {settings['text_attention']!r}; "
                         f"allowed: {', '.join(_TEXT_ATTENTION)}")
    if settings["amp"] not in _AMP_VALUES:
        raise ValueError(f"amp: unknown value {settings['amp']!r}; allowed: {', '.join(_AMP_VALUES)}")
    if settings["exercise_judge"] not in EXERCISE_JUDGE:
        raise ValueError(f"exercise_judge: unknown value {settings['exercise_judge']!r}; "
                         f"allowed: {', '.join(EXERCISE_JUDGE)}")
    for key in ("channels_last", "kd_hint", "tta", "text_kd_from_teacher"):
        if not isinstance(settings[key], bool):
            raise ValueError(f"{key}: {settings[key]!r} is not allowed; use True or False")
    for key in _MODEL_SPECS:
        _validate_model_spec(key, settings[key])
    if isinstance(settings["crop_pad"], bool) or not isinstance(settings["crop_pad"], int) or settings["crop_pad"] < 0:
        raise ValueError(f"crop_pad: {settings['crop_pad']!r} is not allowed; use an integer >= 0")
    if not isinstance(settings["weight_decay"], (int, float)) or isinstance(settings["weight_decay"], bool) \
            or settings["weight_decay"] < 0:
        raise ValueError(f"weight_decay: {settings['weight_decay']!r} is not allowed; use a number >= 0")
    _validate_list("latency_batch_sizes", settings["latency_batch_sizes"], lambda b: _is_int(b) and b >= 1, "integers >= 1")
    _validate_list("kd_sweep_temperatures", settings["kd_sweep_temperatures"], lambda t: _is_number(t) and t > 0,
                "numbers > 0", allow_empty=True)
    _validate_list("kd_sweep_alphas", settings["kd_sweep_alphas"], lambda a: _is_number(a) and 0 <= a <= 1,
                "numbers in [0, 1]", allow_empty=True)
    _validate_list("transfer_label_sweep", settings["transfer_label_sweep"], lambda n: n is None or (_is_int(n) and n >= 1),
                "integers >= 1 (None: all labels)")
    v = settings["text_label_sweep"]
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(a, int) and not isinstance(a, bool) and a >= 1
                                                             for a in v):
        raise ValueError(f"text_label_sweep: {v!r} is not allowed; use a non-empty list of integers >= 1")
    v = settings["llm_layers_removed"]
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(a, int) and not isinstance(a, bool) and a >= 1
                                                             for a in v):
        raise ValueError(f"llm_layers_removed: {v!r} is not allowed; use a non-empty list of integers >= 1")
    for key in ("train_per_class", "test_per_class", "kd_train_per_class", "text_train_limit", "text_test_limit",
                "llm_eval_tokens", "llm_heal_tokens", "imagenet_train_per_class"):
        v = settings[key]
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"{key}: {v!r} is not allowed; use a positive integer or None for all")
