"""Typed settings: a resolved profile is a ``Profile``, a dataclass with one typed field per setting, each carrying
its own rule (the rule functions below raise "name: value is not allowed; use ..." naming the setting).

A new setting is one field line in ``Profile`` and its value in ``coursekit.profiles``' table (in SHARED, or in each
profile); a setting missing from a table, or a key that is no field (a misspelt override), is refused. Dataclasses,
not pydantic: the rules are a few lines each, the course adds no dependency for them, and a field reads as
``P.epochs`` in a notebook as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from .validate import fraction as validate_fraction
from .validate import is_int, is_number, one_of, refuse

__all__ = ["Profile", "validate_table", "AMP_VALUES", "TEXT_ATTENTION", "EXERCISE_JUDGE", "SETTING_NAMES"]

AMP_VALUES = ("auto", "bf16", "fp16", "off")
TEXT_ATTENTION = ("eager", "sdpa")
EXERCISE_JUDGE = ("all", "size", "none")  # what checks.check_target judges: both targets, the size only, nothing


def _rule(check):
    """A dataclass field whose value ``check(name, value)`` validates (raising ValueError) when it is set."""
    return field(metadata={"check": check})


def positive_int():
    return _rule(lambda k, v: None if is_int(v) and v >= 1 else refuse(k, v, "an integer >= 1"))


def positive_int_or_all():
    return _rule(lambda k, v: None if v is None or (is_int(v) and v >= 1) else
                 refuse(k, v, "a positive integer or None for all"))


def non_negative_int():
    return _rule(lambda k, v: None if is_int(v) and v >= 0 else refuse(k, v, "an integer >= 0"))


def blocks_to_remove():
    def check(k, v):
        if not (is_int(v) and v >= 0):
            raise ValueError(f"blocks_to_remove: {v!r} is not allowed; use an integer >= 0 (profile setting {k})")
    return _rule(check)


def layers_to_remove():
    return _rule(lambda k, v: None if is_int(v) and v >= 0 else
                 refuse(k, v, "an integer >= 0 (fewer than the model's layers)"))


def fraction():
    return _rule(validate_fraction)


def keep_fraction():
    return _rule(lambda k, v: None if is_number(v) and 0 < v <= 1 else refuse(k, v, "a fraction in (0, 1]"))


def positive_number():
    return _rule(lambda k, v: None if is_number(v) and v > 0 else refuse(k, v, "a positive number"))


def non_negative_number():
    return _rule(lambda k, v: None if is_number(v) and v >= 0 else refuse(k, v, "a number >= 0"))


def boolean():
    return _rule(lambda k, v: None if isinstance(v, bool) else refuse(k, v, "True or False"))


def choice(allowed):
    return _rule(lambda k, v: one_of(k, v, allowed))


def list_of(ok, what: str, allow_empty: bool = False):
    def check(k, v):
        if not isinstance(v, (list, tuple)) or (not v and not allow_empty) or not all(ok(a) for a in v):
            refuse(k, v, f"a {'' if allow_empty else 'non-empty '}list of {what}")
    return _rule(check)


def model_spec():
    """A model spec: a dict naming its builder ("name") and giving its arguments. Which names and arguments exist is
    Part 1's knowledge (``coursekit.models.check_spec``, which ``start_session`` runs on every spec field)."""
    def check(k, spec):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            refuse(k, spec, "a dict with the builder's 'name' and its arguments")
    return field(metadata={"check": _rule(check).metadata["check"], "model_spec": True})


@dataclass
class Profile:
    """A resolved profile: every setting of the table as a typed, validated field (``p.epochs``; ``p["epochs"]``
    and the other mapping reads work too), plus ``name`` (the profile resolved) and ``dry_run`` (set in a dry run).
    Setting a field, at construction or later, runs its rule."""

    weight_decay: float = non_negative_number()
    label_smoothing: float = fraction()
    tta: bool = boolean()
    transfer_backbone_lr_factor: float = positive_number()
    kd_hint: bool = boolean()
    finetune_lr_factor: float = positive_number()
    pipeline_backbone_lr_factor: float = positive_number()
    text_lr: float = positive_number()
    text_weight_decay: float = non_negative_number()
    text_scratch_lr: float = positive_number()
    text_sweep_batch_size: int = positive_int()
    lora_rank: int = positive_int()
    lora_lr: float = positive_number()
    text_student_layers: int = positive_int()
    text_head_keep: float = keep_fraction()
    text_ffn_keep: float = keep_fraction()
    text_layers_removed: int = layers_to_remove()
    text_recipe_student_layers_removed: int = layers_to_remove()
    text_recipe_layers_removed: int = layers_to_remove()
    text_recovery_fraction: float = keep_fraction()
    llm_num_layers: int = positive_int()
    llm_window: int = positive_int()
    llm_heal_lr: float = positive_number()
    amp: str = choice(AMP_VALUES)
    channels_last: bool = boolean()
    train_per_class: int | None = positive_int_or_all()
    test_per_class: int | None = positive_int_or_all()
    exercise_judge: str = choice(EXERCISE_JUDGE)
    val_fraction: float = fraction()
    batch_size: int = positive_int()
    epochs: int = positive_int()
    lr: float = positive_number()
    crop_pad: int = non_negative_int()
    base_model: dict = model_spec()
    small_model: dict = model_spec()
    latency_batch_sizes: list = list_of(lambda b: is_int(b) and b >= 1, "integers >= 1")
    latency_min_time: float = positive_number()
    latency_rounds: int = positive_int()
    source_epochs: int = positive_int()
    transfer_steps: int = positive_int()
    transfer_batch_size: int = positive_int()
    transfer_seeds: int = positive_int()
    transfer_label_sweep: list = list_of(lambda n: n is None or (is_int(n) and n >= 1), "integers >= 1 (None: all labels)")
    imagenet_train_per_class: int | None = positive_int_or_all()
    imagenet_steps: int = positive_int()
    student_model: dict = model_spec()
    kd_train_per_class: int | None = positive_int_or_all()
    kd_epochs: int = positive_int()
    kd_seeds: int = positive_int()
    kd_sweep_temperatures: list = list_of(lambda t: is_number(t) and t > 0, "numbers > 0", allow_empty=True)
    kd_sweep_alphas: list = list_of(lambda a: is_number(a) and 0 <= a <= 1, "numbers in [0, 1]", allow_empty=True)
    prune_sweep: list = list_of(lambda a: isinstance(a, (int, float)) and 0 <= a < 1, "numbers in [0, 1)")
    prune_finetune_sparsities: list = list_of(lambda a: isinstance(a, (int, float)) and 0 <= a < 1, "numbers in [0, 1)")
    prune_finetune_epochs: int = positive_int()
    prune_seeds: int = positive_int()
    sensitivity_amounts: list = list_of(lambda a: isinstance(a, (int, float)) and 0 <= a < 1, "numbers in [0, 1)")
    channel_ratio: float = fraction()
    channel_finetune_epochs: int = positive_int()
    channel_sensitivity_ratios: list = list_of(lambda a: isinstance(a, (int, float)) and 0 <= a < 1, "numbers in [0, 1)")
    trim_model: dict = model_spec()
    trim_blocks_to_remove: int = blocks_to_remove()
    trim_recovery_epochs: int = positive_int()
    pipeline_teacher_epochs: int = positive_int()
    pipeline_student_model: dict = model_spec()
    pipeline_kd_epochs: int = positive_int()
    pipeline_channel_ratio: float = fraction()
    pipeline_blocks_to_remove: int = blocks_to_remove()
    pipeline_recovery_epochs: int = positive_int()
    text_attention: str = choice(TEXT_ATTENTION)
    text_max_length: int = positive_int()
    text_train_limit: int | None = positive_int_or_all()
    text_test_limit: int | None = positive_int_or_all()
    text_batch_size: int = positive_int()
    text_epochs: int = positive_int()
    text_label_sweep: list = list_of(lambda n: is_int(n) and n >= 1, "integers >= 1")
    text_sweep_steps: int = positive_int()
    text_seeds: int = positive_int()
    text_probe_epochs: int = positive_int()
    text_latency_batch: int = positive_int()
    text_latency_seq: int = positive_int()
    text_kd_epochs: int = positive_int()
    text_kd_seeds: int = positive_int()
    text_kd_hidden_seeds: int = positive_int()
    text_kd_from_teacher: bool = boolean()
    text_recovery_epochs: int = positive_int()
    llm_eval_tokens: int | None = positive_int_or_all()
    llm_held_out_tokens: int | None = positive_int_or_all()
    llm_calib_tokens: int = positive_int()
    llm_layers_removed: list = list_of(lambda n: is_int(n) and n >= 1, "integers >= 1")
    llm_heal_steps: int = positive_int()
    llm_heal_batch: int = positive_int()
    llm_heal_seq: int = positive_int()
    llm_heal_tokens: int | None = positive_int_or_all()
    llm_prompt_len: int = positive_int()
    llm_decode_tokens: int = positive_int()
    llm_gen_tokens: int = positive_int()
    quant_calib_batches: int = positive_int()
    quant_qat_epochs: int = positive_int()
    quant_llm_eval_tokens: int | None = positive_int_or_all()
    quant_awq_grid: int = positive_int()
    speech_hop_ms: float = positive_number()
    speech_mels: int = positive_int()
    speech_width: int = positive_int()
    speech_blocks: int = positive_int()
    speech_lr: float = positive_number()
    speech_weight_decay: float = non_negative_number()
    speech_batch_size: int = positive_int()
    speech_epochs: int = positive_int()
    speech_student_epochs: int = positive_int()
    speech_recovery_epochs: int = positive_int()
    speech_held_out: list = list_of(lambda s: isinstance(s, str), "speaker names")
    speech_shots: list = list_of(lambda n: is_int(n) and n >= 1, "integers >= 1")
    speech_seeds: int = positive_int()
    speech_adapt_steps: int = positive_int()
    speech_adapt_lr: float = positive_number()
    speech_head_lr: float = positive_number()
    speech_scratch_steps: int = positive_int()
    speech_student_width: int = positive_int()
    speech_student_blocks: int = positive_int()
    speech_kd_temperature: float = positive_number()
    speech_kd_alpha: float = fraction()
    speech_blocks_to_remove: int = non_negative_int()
    speech_channel_ratio: float = fraction()
    name: str = "custom"
    dry_run: dict | None = None

    def __setattr__(self, key, value):
        spec = _FIELDS.get(key)
        if spec is None and key not in ("name", "dry_run"):
            raise ValueError(f"unknown profile setting(s) {[key]}; allowed: {', '.join(sorted(_FIELDS))}")
        if spec is not None:
            spec.metadata["check"](key, value)
        object.__setattr__(self, key, value)

    def __getattr__(self, key):  # only for names that are not fields
        raise AttributeError(f"profile has no setting {key!r}; settings: {', '.join(sorted(_FIELDS))}")

    # mapping reads, for code that treats a profile as the dict it used to be
    def __getitem__(self, key):
        if key not in _ALL:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key, value):
        setattr(self, key, value)

    def __contains__(self, key) -> bool:
        return key in _ALL

    def __iter__(self):
        return iter(_ALL)

    def __len__(self) -> int:
        return len(_ALL)

    def keys(self):
        return list(_ALL)

    def items(self):
        return [(k, getattr(self, k)) for k in _ALL]

    def get(self, key, default=None):
        return getattr(self, key) if key in _ALL else default

    def update(self, values: dict) -> None:
        for k, v in values.items():
            setattr(self, k, v)

    @staticmethod
    def model_spec_fields() -> tuple[str, ...]:
        """The settings that are model specs (``base_model``, ``student_model``, ...)."""
        return tuple(f.name for f in fields(Profile) if f.metadata.get("model_spec"))


_FIELDS = {f.name: f for f in fields(Profile) if "check" in f.metadata}
_ALL = tuple(f.name for f in fields(Profile))


def validate_table(settings: dict) -> Profile:
    """The Profile of ``settings`` (a full table): every key a setting, every setting present, every value checked.
    ValueError naming the setting otherwise."""
    unknown = sorted(k for k in settings if k not in _FIELDS and k not in ("name", "dry_run"))
    if unknown:
        raise ValueError(f"unknown profile setting(s) {unknown}; allowed: {', '.join(sorted(_FIELDS))}")
    missing = sorted(k for k in _FIELDS if k not in settings)
    if missing:
        raise ValueError(f"profile table: setting(s) {missing} have no value")
    return Profile(**settings)


SETTING_NAMES = tuple(_FIELDS)  # every setting a profile table must give
