"""Run profiles: one table of sizes and schedules, resolved once per notebook.

A notebook passes its ``profile`` parameter ("smoke", "cpu", "gpu" or "auto")
and any explicit overrides to ``resolve_profile``. "auto" becomes the value of
the environment variable COURSEKIT_PROFILE when that is set, else "gpu" when
CUDA is available and "cpu" otherwise. An override that is not None always
wins over the profile's value. Introduced in notebooks/00_baseline.ipynb.
"""

from __future__ import annotations

import copy
import os

from .runsettings import DRY_RUN_ENV, dry_run_steps  # noqa: F401  (re-exported: where profiles' users look)
from .settings import EXERCISE_JUDGE, SETTING_NAMES, Profile, validate_table

__all__ = ["PROFILES", "PROFILE_NAMES", "Profile", "resolve_profile", "profile_name", "dry_run_steps", "DRY_RUN_CAPS",
           "DRY_RUN_ENV", "GPU_PROFILE_NOTE", "EXERCISE_JUDGE"]

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
    "text_weight_decay": 0.01,  # AdamW's decoupled weight decay for every text model (07-09)
    "text_scratch_lr": 3e-4,
    "text_sweep_batch_size": 16,
    "lora_rank": 8,
    "lora_lr": 1e-3,
    "text_student_layers": 3,
    "text_head_keep": 0.5,  # 09: fraction of all attention heads kept (at least one per layer)
    "text_ffn_keep": 0.5,  # 09: fraction of each layer's FFN neurons kept
    "text_layers_removed": 3,  # 09: layers removed from the 6-layer teacher (equal budget to the width cut)
    "text_recipe_student_layers_removed": 2,  # 09: layers removed from the teacher for the recipe's distilled student
    "text_recipe_layers_removed": 1,  # 09: layers trimmed from the pruned student at the recipe's last step
    "llm_window": 256,  # 10: perplexity window (disjoint windows)
    "llm_heal_lr": 1e-4,
    "amp": "auto",
    "channels_last": True,
    # 13, speech: log-mel features (25 ms windows, a 20 ms hop: half the frames of 10 ms, no accuracy lost in the
    # calibration) and the DS-CNN keyword spotter's recipe (AdamW, one-cycle, time shift and SpecAugment masks)
    "speech_hop_ms": 20.0,
    "speech_mels": 40,
    "speech_width": 32,
    "speech_blocks": 4,
    "speech_lr": 0.01,
    "speech_weight_decay": 0.01,
    "speech_batch_size": 64,
    "speech_shots": [1, 2, 5],  # 13: takes per digit of the new speaker that adaptation may use
    # 13: AdamW rates of speaker adaptation, all layers or BatchNorm only / the classifier only, chosen from 1e-3, 3e-3
    # and 1e-2 by adapting to yweweler, a speaker no profile holds out to report (3 seeds, k = 1, 2, 5)
    "speech_adapt_lr": 1e-3,
    "speech_head_lr": 1e-2,
    "speech_student_width": 16,  # 13: the distilled student, <= 1/4 of the teacher's parameters
    "speech_student_blocks": 2,
    # 13: distillation's temperature and weight, chosen on the first fold's validation takes in a calibration
    # (recovering the pruned teacher: T = 1, 2, 4 at alpha 0.5 and T = 2 at alpha 0.9 gave 95.6-96.8%, the last best)
    "speech_kd_temperature": 2.0,
    "speech_kd_alpha": 0.9,
    "speech_blocks_to_remove": 1,  # 13: DS-CNN blocks trimmed from the teacher (plans "trim" and "trim + prune")
    "speech_channel_ratio": 0.5,  # 13: share of every channel group pruned (plans "prune" and "trim + prune")
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
        "latency_rounds": 1,  # interleaved rounds behind each ledger record's latency (ImageWork.record_all, TextWork.record_text)
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
        "text_recovery_fraction": 1.0,  # 09: share of the training sentences (seeded) each recovery sees
        # 10-12: SmolLM2 cut to its first 6 of 30 layers (pretrained.keep_first_layers): a stand-in with the real
        # widths, weights and tokenizer, so every cell runs in seconds; its figures are no result of the course
        "llm_num_layers": 6,
        "llm_eval_tokens": 256,  # 10: first N tokens of WikiText-2 test and Tiny Shakespeare (None: all): one window
        "llm_held_out_tokens": 256,  # 10: WikiText-2 valid tokens after the calibration text that judge exercise 4
        "llm_calib_tokens": 256,  # 10: WikiText-2 valid tokens for layer scores and Wanda norms
        "llm_layers_removed": [3],  # 10: the depth sweep
        "llm_heal_steps": 2,
        "llm_heal_batch": 2,
        "llm_heal_seq": 64,
        "llm_heal_tokens": 4096,  # 10: healing windows are drawn from the first N tokens of WikiText-2 valid
        "llm_prompt_len": 32,  # 10: prefill latency prompt
        "llm_decode_tokens": 4,  # 10: tokens generated per decode timing
        "llm_gen_tokens": 8,  # 10: tokens of each sample continuation
        "quant_calib_batches": 2,  # 11: batches of training images that calibrate static int8 ranges
        "quant_qat_epochs": 1,  # 11: quantization-aware fine-tuning epochs (and the same-schedule float control)
        "quant_llm_eval_tokens": 256,  # 11: WikiText-2 test tokens behind every scheme's float32 perplexity (None: all)
        "quant_awq_grid": 3,  # 11: values of alpha in [0, 1] that AWQ's scale search tries per layer
        "speech_epochs": 1,  # 13: the teacher's and each fold's epochs
        "speech_student_epochs": 1,  # 13: every distilled or label-trained student's epochs
        "speech_recovery_epochs": 1,  # 13: epochs that recover a pruned or trimmed teacher (with distillation)
        "speech_held_out": ["george"],  # 13: speakers held out, one fold each
        "speech_seeds": 2,  # 13: seeds of every adaptation, distillation and recovery comparison
        "speech_adapt_steps": 2,  # 13: fine-tuning steps on the new speaker's k takes per digit
        "speech_scratch_steps": 4,  # 13: steps of a model trained from scratch on those takes alone
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
        # 09: a seeded half of the training sentences per recovery (ten recoveries; nine on all of them took 484 s)
        "text_recovery_fraction": 0.5,
        "llm_num_layers": 30,  # 10-12: SmolLM2-135M's layers, all of them (checked against the loaded model)
        # 10: first N tokens of WikiText-2 test and Tiny Shakespeare (None: all): 11's quant_llm_eval_tokens, so the two
        # chapters score the same text; 4,096 cost the chapter about 75 s more (eight more windows per perplexity)
        "llm_eval_tokens": 2048,
        "llm_held_out_tokens": 4096,  # 10: WikiText-2 valid tokens after the calibration text that judge exercise 4
        "llm_calib_tokens": 2048,  # 10: WikiText-2 valid tokens for layer scores and Wanda norms
        "llm_layers_removed": [3, 6, 9],  # 10: the depth sweep
        # 10: four healing runs (KD, its two controls, the width cut): at 20 steps they took 200 s of a 540-s chapter;
        # 12 keeps the chapter inside its 6 minutes (the controls share the schedule, so the comparisons stay fair)
        "llm_heal_steps": 12,
        "llm_heal_batch": 4,
        "llm_heal_seq": 128,
        "llm_heal_tokens": 65536,  # 10: healing windows are drawn from the first N tokens of WikiText-2 valid
        "llm_prompt_len": 256,  # 10: prefill latency prompt
        "llm_decode_tokens": 32,  # 10: tokens generated per decode timing
        "llm_gen_tokens": 30,  # 10: tokens of each sample continuation
        "quant_calib_batches": 8,  # 11: batches of training images that calibrate static int8 ranges
        "quant_qat_epochs": 1,  # 11: quantization-aware fine-tuning epochs (and the same-schedule float control)
        "quant_llm_eval_tokens": 2048,  # 11: WikiText-2 test tokens behind every scheme's float32 perplexity (None: all)
        "quant_awq_grid": 21,  # 11: values of alpha in [0, 1] that AWQ's scale search tries per layer
        "speech_epochs": 20,  # 13: the teacher's and each fold's epochs
        "speech_student_epochs": 20,  # 13: every distilled or label-trained student's epochs
        # 13: recovery of a pruned or trimmed teacher, chosen on the yweweler fold's validation takes (a fold the cpu
        # profile does not report): after 20 epochs the three plans were at 84.8 / 92.0 / 96.0%, after 40 at
        # 94.0 / 95.6 / 96.8% (teacher 97.2%); lr 0.003 was worse at both lengths, alpha 0.5 within a point of 0.9
        "speech_recovery_epochs": 40,
        "speech_held_out": ["george", "jackson"],  # 13: a stated subset, the first two by name (gpu: all six)
        "speech_seeds": 3,  # 13: seeds of every adaptation, distillation and recovery comparison
        "speech_adapt_steps": 30,  # 13: fine-tuning steps on the new speaker's k takes per digit
        "speech_scratch_steps": 100,  # 13: steps of a model trained from scratch on those takes alone
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
        "text_recovery_fraction": 1.0,  # 09: every training sentence in each recovery
        "llm_num_layers": 30,  # 10-12: SmolLM2-135M's layers, all of them
        "llm_eval_tokens": None,  # 10: first N tokens of WikiText-2 test and Tiny Shakespeare (None: all)
        "llm_held_out_tokens": None,  # 10: WikiText-2 valid tokens after the calibration text that judge exercise 4
        "llm_calib_tokens": 16384,  # 10: WikiText-2 valid tokens for layer scores and Wanda norms
        "llm_layers_removed": [3, 6, 9, 12],  # 10: the depth sweep
        "llm_heal_steps": 400,
        "llm_heal_batch": 8,
        "llm_heal_seq": 256,
        "llm_heal_tokens": None,  # 10: healing windows are drawn from the first N tokens of WikiText-2 valid
        "llm_prompt_len": 256,  # 10: prefill latency prompt
        "llm_decode_tokens": 64,  # 10: tokens generated per decode timing
        "llm_gen_tokens": 40,  # 10: tokens of each sample continuation
        "quant_calib_batches": 16,  # 11: batches of training images that calibrate static int8 ranges
        "quant_qat_epochs": 5,  # 11: quantization-aware fine-tuning epochs (and the same-schedule float control)
        "quant_llm_eval_tokens": None,  # 11: WikiText-2 test tokens behind every scheme's float32 perplexity (None: all)
        "quant_awq_grid": 21,  # 11: values of alpha in [0, 1] that AWQ's scale search tries per layer
        "speech_epochs": 30,  # 13: the teacher's and each fold's epochs
        "speech_student_epochs": 30,  # 13: every distilled or label-trained student's epochs
        "speech_recovery_epochs": 60,  # 13: epochs that recover a pruned or trimmed teacher (twice the students', as cpu)
        "speech_held_out": ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"],  # 13: leave-one-speaker-out
        "speech_seeds": 5,  # 13: seeds of every adaptation, distillation and recovery comparison
        "speech_adapt_steps": 30,  # 13: fine-tuning steps on the new speaker's k takes per digit
        "speech_scratch_steps": 100,  # 13: steps of a model trained from scratch on those takes alone
    },
}
PROFILE_NAMES = ("smoke", "cpu", "gpu", "auto")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


GPU_PROFILE_NOTE = ("the gpu profile's accuracies have not been measured on a GPU yet (its configuration is checked by a "
                    "dry run on the CPU); the course's figures come from the cpu profile")


def profile_name(profile: str = "auto") -> str:
    """The profile ``profile`` stands for: itself, or for "auto" $COURSEKIT_PROFILE when set, else "gpu" when CUDA is
    available and "cpu" when not. ValueError for an unknown name."""
    if profile not in PROFILE_NAMES:
        raise ValueError(f"profile: {profile!r} is not allowed; use {', '.join(PROFILE_NAMES)}")
    if profile != "auto":
        return profile
    env = os.environ.get("COURSEKIT_PROFILE", "").strip()
    if env:
        if env not in PROFILES:
            raise ValueError(f"COURSEKIT_PROFILE: {env!r} is not allowed; use {', '.join(PROFILES)}")
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
    unknown = sorted(k for k in overrides if k not in SETTING_NAMES)
    if unknown:
        raise ValueError(f"unknown profile setting(s) {unknown}; allowed: {', '.join(sorted(SETTING_NAMES))}")
    values = copy.deepcopy(PROFILES[name])
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = validate_table(values)
    if dry is not None:  # after validation: the caps are not the profile's values, and say so in "dry_run"
        settings.update(dict(DRY_RUN_CAPS))
        settings.dry_run = {"max_train_steps": dry, "caps": dict(DRY_RUN_CAPS)}
    settings.name = name
    return settings


# COURSEKIT_DRY_RUN=<steps>: run a profile's models, ratios and settings with every training loop stopped after
# <steps> optimizer steps and the data capped to a few batches (below), on whatever device there is, the gpu profile
# included on a CPU. It checks configuration (shapes, ratios that divide, cells that run), never results: every
# environment report says "dry_run", and nothing it prints is a figure of the course. Tested in tests/test_newcomer.py
# (every chapter) and tests/test_gpu_dry_run.py (the switch).
DRY_RUN_CAPS: dict = {
    "train_per_class": 24, "test_per_class": 4, "kd_train_per_class": 24, "imagenet_train_per_class": 4,
    "batch_size": 16, "transfer_batch_size": 16, "latency_batch_sizes": [1, 2], "latency_min_time": 0.001,
    "latency_rounds": 1,
    "transfer_label_sweep": [10],  # 01: one point besides labels_per_class; more labels only add images to push through
    "text_label_sweep": [8, 32],  # 07: with 48 training sentences, 128 and 512 per class are the same sentences again
    "text_train_limit": 48, "text_test_limit": 24, "text_batch_size": 8, "text_sweep_batch_size": 8,
    "text_latency_batch": 2, "text_latency_seq": 16,
    "llm_num_layers": 6, "llm_layers_removed": [3],  # the smoke profile's SmolLM2 stand-in (its first 6 layers)
    "llm_eval_tokens": 256, "llm_held_out_tokens": 256, "llm_calib_tokens": 256, "llm_heal_tokens": 4096,
    "llm_heal_batch": 2, "llm_heal_seq": 64,
    "llm_prompt_len": 32, "llm_decode_tokens": 4, "llm_gen_tokens": 8,
    "quant_calib_batches": 2, "quant_llm_eval_tokens": 256, "quant_awq_grid": 3,
    "speech_adapt_steps": 2, "speech_scratch_steps": 2, "speech_seeds": 2,  # 13: the few-shot loops are not fit()'s
    "speech_held_out": ["george", "jackson"],  # 13: two of the six folds (the cpu profile's): each fold repeats the same code
    "exercise_judge": "size",  # a few steps of training: accuracies mean nothing, the profile's sizes still count
}
