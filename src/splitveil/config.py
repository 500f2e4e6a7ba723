"""Experiment specs: YAML in, validated by pydantic, resolved YAML written next to every output.

Every model forbids unknown keys, so a typo such as ``epoch: 3`` is an error that names the key and
lists the allowed ones instead of being silently ignored. Components' ``options`` are checked when
the spec loads too (names and types, against each model's, attack's and defense's declared
options), so no mistake waits until a sweep has trained for minutes. docs/specs.md lists every key
and its default.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from splitveil.errors import ConfigError
from splitveil.plugins import load_plugins, require_imported

#: What the output-inference audit's classifiers read, and the re-identification distances.
Observed = Literal["logits", "features", "both"]
ReidDistance = Literal["l2", "ssim", "embedding"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    """Which dataset, where its files are, and how it is split."""

    name: str = "fashion-mnist"
    data_dir: str | None = None
    aux_fraction: float | None = Field(default=None, ge=0.0, lt=1.0)
    val_fraction: float | None = Field(default=None, ge=0.0, lt=1.0)
    limit: int | None = Field(default=None, gt=0, description="cap on every split's size")

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        from splitveil.data import DATASETS

        DATASETS.get(name)  # raises UnknownNameError listing the datasets
        return name

    def loader_options(self) -> dict[str, Any]:
        """Keyword options for ``load_dataset`` (unset fractions keep the dataset's defaults)."""
        return self.model_dump(exclude={"name"}, exclude_none=True)


class ModelSpec(_Strict):
    """A zoo model and its constructor options (e.g. ``widths``)."""

    name: str = "he-cnn"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from splitveil.models import MODELS

        MODELS.get(name)
        return name

    @model_validator(mode="after")
    def _options_known(self) -> ModelSpec:
        from splitveil.models.registry import check_model_options

        check_model_options(self.name, self.options)
        return self


class TrainConfig(_Strict):
    """Optimisation settings of the one training loop."""

    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=1e-3, gt=0.0)
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    patience: int | None = Field(default=None, ge=1, description="stop after N epochs without a better val accuracy")
    eval_batch_size: int = Field(default=512, ge=1)
    schedule: Literal["constant", "cosine"] = Field(
        default="constant", description="learning rate: constant, or annealed to zero over the epochs (cosine)"
    )


class AttackSpec(_Strict):
    """One attack of the audit and its options (e.g. ``steps`` for rMLE)."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_attack(cls, name: str) -> str:
        from splitveil.attacks import ATTACKS

        ATTACKS.get(name)
        return name

    @model_validator(mode="after")
    def _options_known(self) -> AttackSpec:
        from splitveil.attacks.registry import check_attack_options

        check_attack_options(self.name, self.options)
        return self


#: DefenseSpec fields added after run directories and caches were written; see its serializer.
_LATER_DEFENSE_FIELDS = ("task_only_epochs",)


class DefenseSpec(_Strict):
    """One defense of the sweep: every strength is a cell at every cut, against every attack.

    Defenses that need training (``requires_training``, or ``retrain: true`` for an inference-time
    defense such as noise) start from the undefended model's weights (``init: pretrained``) or from
    scratch, and train ``epochs`` epochs with the defense's loss terms, keeping the last epoch:
    choosing the best validation epoch would favour the least-defended weights.
    """

    name: str
    label: str | None = Field(default=None, description="name in results and the report (default: name)")
    strengths: list[float] = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)
    retrain: bool | None = Field(default=None, description="train with the defense (default: if it needs it)")
    init: Literal["pretrained", "scratch"] = "pretrained"
    epochs: int | None = Field(default=None, ge=1, description="training epochs (default: train.epochs)")
    lr: float | None = Field(default=None, gt=0, description="learning rate of its training (default: train.lr)")
    schedule: Literal["constant", "cosine"] | None = Field(
        default=None, description="learning rate schedule of its training (default: train.schedule)"
    )
    warmup_epochs: float = Field(
        default=0.0, ge=0, description="epochs over which the defense's loss terms ramp linearly from 0 to full weight"
    )
    task_only_epochs: float = Field(
        default=0.0,
        ge=0,
        description="epochs trained on the task alone before the defense's loss terms switch on (then warm-up)",
    )
    distill: float = Field(
        default=0.0, ge=0, allow_inf_nan=False, description="weight of distillation from the undefended model's logits"
    )
    distill_temperature: float = Field(default=2.0, gt=0, allow_inf_nan=False, description="its softmax temperature")

    @model_serializer(mode="wrap")
    def _omit_unset_later_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Fields added after results were stored are left out of dumps at their default, so every
        # fingerprint that hashes a dump (bench cells, checkpoints, run directories) stays as it was.
        dumped: dict[str, Any] = handler(self)
        for name in _LATER_DEFENSE_FIELDS:
            if dumped.get(name) == type(self).model_fields[name].default:
                dumped.pop(name, None)
        return dumped

    def training(self, base: TrainConfig) -> TrainConfig:
        """``base`` (the spec's ``train``) with this defense's epochs, learning rate and schedule."""
        given = {"epochs": self.epochs, "lr": self.lr, "schedule": self.schedule}
        return base.model_copy(update={key: value for key, value in given.items() if value is not None})

    @field_validator("name")
    @classmethod
    def _known_defense(cls, name: str) -> str:
        from splitveil.defenses import DEFENSES

        DEFENSES.get(name)
        return name

    @field_validator("strengths")
    @classmethod
    def _non_negative(cls, strengths: list[float]) -> list[float]:
        if any(not strength >= 0 for strength in strengths):
            raise ValueError(f"strengths must be >= 0, got {strengths}")
        return strengths

    @model_validator(mode="after")
    def _options_build(self) -> DefenseSpec:
        from splitveil.defenses import DEFENSES, create_defense
        from splitveil.registry import check_factory_options

        reserved = {"strength": "list the strengths under `strengths`"}
        check_factory_options(f"defense {self.name!r}", DEFENSES.get(self.name), self.options, reserved=reserved)
        for strength in self.strengths:  # every option and strength is checked before anything runs
            try:
                create_defense(self.name, strength=strength, **self.options)
            except TypeError as exc:  # a value the annotations let through but the defense cannot use
                raise ConfigError(f"defense {self.name!r}: {exc}") from None
        return self

    @property
    def display_name(self) -> str:
        return self.label or self.name


class MineSpec(_Strict):
    """How mutual information I(x; z) is estimated (MINE)."""

    enabled: bool = True
    samples: int = Field(default=2000, ge=64, description="test images used for the estimate")
    steps: int = Field(default=1000, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _options_known(self) -> MineSpec:
        from splitveil.metrics.mine import estimate_mi
        from splitveil.registry import check_factory_options

        reserved = {"steps": "use audit.mine.steps", "seed": "the run passes the spec's top-level `seed`"}
        check_factory_options("MINE", estimate_mi, self.options, reserved=reserved)
        return self


class EvaluatorSpec(_Strict):
    """The independent classifier that scores reconstructions (privacy accuracy)."""

    enabled: bool = True
    model: str = "lenet"
    epochs: int = Field(default=10, ge=1)

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from splitveil.models import MODELS

        MODELS.get(name)
        return name


class OutputAuditSpec(_Strict):
    """Output inference (``splitveil.attacks.output_inference``): what the cloud learns of the answer.

    For every deployed split, a classifier per observation is trained on what the cloud sees of the
    auxiliary queries and scored on ``targets`` test images; off unless enabled (it is the audit of
    output-privacy defenses such as ``salted``).
    """

    enabled: bool = False
    observe: list[Observed] = Field(default_factory=lambda: list[Observed](["logits", "features"]))
    targets: int = Field(default=2000, ge=1, description="test images the classifiers are scored on")
    epochs: int = Field(default=20, ge=1)


class ReidSpec(_Strict):
    """Instance re-identification (``splitveil.metrics.reidentification``) of every attack's reconstructions:
    each target against ``candidates - 1`` other test images of its class, under the best of ``distances``."""

    enabled: bool = True
    candidates: int = Field(default=100, ge=2, description="N: the target plus N - 1 same-class test images")
    distances: list[ReidDistance] = Field(
        default_factory=lambda: list[ReidDistance](["l2", "ssim", "embedding"]),
        min_length=1,
        description="the attacker's distances (embedding: the evaluator's penultimate layer)",
    )


class AuditSpec(_Strict):
    """What is measured at every cut: how many test images are attacked, MI, privacy accuracy."""

    targets: int = Field(default=64, ge=1, description="test images each attack reconstructs")
    grid_images: int = Field(default=8, ge=1, description="images shown per row of the report's grids")
    mine: MineSpec = Field(default_factory=MineSpec)
    evaluator: EvaluatorSpec = Field(default_factory=EvaluatorSpec)
    output: OutputAuditSpec = Field(default_factory=OutputAuditSpec)
    reid: ReidSpec = Field(default_factory=ReidSpec)
    attack_seed: int | None = Field(
        default=None,
        ge=0,
        description="seed of the attackers' training and the re-identification sets (default: the spec's seed); "
        "another value re-measures the same deployed splits with fresh attackers",
    )

    def attacker_seed(self, spec_seed: int) -> int:
        """The seed the attackers train with: ``attack_seed`` when set, else the spec's."""
        return spec_seed if self.attack_seed is None else self.attack_seed


class ExperimentSpec(_Strict):
    """One experiment: a model trained on a dataset, the cuts to study and the attacks to run."""

    #: Modules imported before anything else resolves (components registered outside splitveil).
    plugins: list[str] = Field(default_factory=list)
    name: str = "experiment"
    seed: int = 0
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainConfig = Field(default_factory=TrainConfig)
    cuts: list[str] = Field(default_factory=list)
    attacks: list[AttackSpec] = Field(default_factory=list)
    defenses: list[DefenseSpec] = Field(default_factory=list)
    audit: AuditSpec = Field(default_factory=AuditSpec)

    @model_validator(mode="before")
    @classmethod
    def _import_plugins(cls, raw: Any, info: ValidationInfo) -> Any:
        # Before the fields validate: their names may be registered by a plugin. A spec read from a run
        # directory (not one the user named) is not trusted to import code: its plugins must be imported.
        if isinstance(raw, dict) and raw.get("plugins"):
            plugins = raw["plugins"] if isinstance(raw["plugins"], list) else [raw["plugins"]]
            if (info.context or {}).get("trust_plugins", True):
                load_plugins(plugins)
            else:
                require_imported([str(name) for name in plugins], where="this spec", error=ConfigError)
        return raw

    @model_validator(mode="after")
    def _warmup_within_training(self) -> ExperimentSpec:
        for defense in self.defenses:
            epochs = defense.training(self.train).epochs
            if defense.warmup_epochs > epochs:
                raise ValueError(
                    f"defense {defense.display_name!r}: warmup_epochs={defense.warmup_epochs:g} is longer than its "
                    f"{epochs} training epochs, so its loss terms would never reach full weight; give at most {epochs}"
                )
            if defense.task_only_epochs + defense.warmup_epochs > epochs:
                raise ValueError(
                    f"defense {defense.display_name!r}: task_only_epochs={defense.task_only_epochs:g} and "
                    f"warmup_epochs={defense.warmup_epochs:g} add up to more than its {epochs} training epochs, so "
                    f"its loss terms would never reach full weight; make them add up to at most {epochs}"
                )
        return self

    @model_validator(mode="after")
    def _distinct_defense_labels(self) -> ExperimentSpec:
        labels = [defense.display_name for defense in self.defenses]
        for label in labels:
            if label == "none" or labels.count(label) > 1:
                raise ValueError(
                    f"defense label {label!r} is {'reserved' if label == 'none' else 'used twice'}; "
                    "give each defense entry a distinct `label` (e.g. gaussian-noise-input)"
                )
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def parse_spec(raw: Any, *, source: str = "spec", trust_plugins: bool = True) -> ExperimentSpec:
    """Validate a mapping as an :class:`ExperimentSpec`; errors become one-line ``ConfigError``s.

    ``trust_plugins=False`` (a spec found in a run directory): its ``plugins`` are not imported, and
    must have been imported already.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(raw).__name__}")
    try:
        return ExperimentSpec.model_validate(raw, context={"trust_plugins": trust_plugins, "source": source})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc, ExperimentSpec)}") from None


def parse_attack(name: str, options: dict[str, Any], *, source: str) -> AttackSpec:
    """Validate one attack and its options (as the CLI's ``--attack`` and ``--set`` give them)."""
    try:
        return AttackSpec(name=name, options=options)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc, AttackSpec)}") from None


def load_spec(
    path: str | Path, overrides: dict[str, Any] | None = None, *, trust_plugins: bool = True
) -> ExperimentSpec:
    """Read a YAML spec, apply dotted ``overrides`` (``{"train.epochs": 3}``), validate it (see
    :func:`parse_spec` for ``trust_plugins``)."""
    raw = apply_overrides(read_spec_file(path), overrides or {})
    if "tune" in raw:  # a whole tuning spec, not a typo: say which command reads it
        raise ConfigError(f"{path} is a tuning spec (it has a `tune` section): run `splitveil tune {path} --out DIR`")
    return parse_spec(raw, source=str(path), trust_plugins=trust_plugins)


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML spec file holds. A missing, unreadable, binary, malformed, empty or
    non-mapping file is a one-line ConfigError naming the file and the fix.

    An empty file is refused rather than read as "all defaults": that would silently start a
    sweep of every cut of the default model, which is never what an empty file meant.
    """
    path = Path(path)
    example = "pass the path of a YAML spec such as configs/quick.yaml"
    if path.is_dir():
        raise ConfigError(f"spec file {str(path)!r} is a directory; {example}")
    if not path.is_file():
        raise ConfigError(f"spec file {str(path)!r} does not exist; {example}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (not UTF-8); {example}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read spec file {path} ({exc.strerror}); check its permissions") from None
    try:
        raw = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: a date such as 2024-13-45
        problem = " ".join(f"{exc.__class__.__name__}: {exc}".split())
        raise ConfigError(f"{path}: not valid YAML ({problem})") from None
    if raw is None or raw == {}:
        raise ConfigError(
            f"{path} is empty; a spec names at least its model, data or attacks "
            "(see configs/quick.yaml; docs/specs.md lists every key and its default)"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each dotted key in ``overrides`` set (``None`` values skipped)."""
    merged: dict[str, Any] = {key: (dict(value) if isinstance(value, dict) else value) for key, value in raw.items()}
    for dotted, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = merged
        for part in parents:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[leaf] = value
    return merged


def write_resolved(spec: ExperimentSpec, directory: str | Path) -> Path:
    """Write the fully resolved spec (defaults filled in) as ``spec.resolved.yaml`` in ``directory``.

    A different spec recorded there before (a run directory that several specs filled) is kept
    beside it as ``spec.resolved.<its hash>.yaml``; the write is atomic.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "spec.resolved.yaml"
    text = spec.to_yaml()
    if path.is_file():
        earlier = path.read_text()
        if earlier == text:
            return path
        kept = directory / f"spec.resolved.{hashlib.sha256(earlier.encode()).hexdigest()[:12]}.yaml"
        if not kept.exists():
            os.replace(path, kept)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    os.replace(partial, path)
    return path


def describe_validation_error(exc: ValidationError, root: type[BaseModel]) -> str:
    """One line per problem, naming the dotted key and what is allowed there."""
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(root, error["loc"][:-1]))
            problems.append(f"unknown key {location!r} (allowed: {allowed})")
        else:
            message = error["msg"].removeprefix("Value error, ")
            # A whole section (a check across its keys) is not repeated: the message names what is wrong.
            got = "" if isinstance(error["input"], dict) else f" (got {error['input']!r})"
            problems.append(f"{location}: {message}{got}" if location else f"{message}{got}")
    return "; ".join(problems)


def _allowed_keys(root: type[BaseModel], parents: tuple[Any, ...]) -> list[str]:
    model: Any = root
    for part in parents:
        if isinstance(part, int):  # an index into a list of sub-specs, such as defenses.0
            continue
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if get_origin(annotation) is list:
            (annotation,) = get_args(annotation)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
