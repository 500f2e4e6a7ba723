"""The planner's spec: the target task, the public data, the knobs to sweep and the constraints."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from splitveil.config import (
    AttackSpec,
    DataSpec,
    ModelSpec,
    TrainConfig,
    _Strict,
    apply_overrides,
    describe_validation_error,
    read_spec_file,
)
from splitveil.errors import ConfigError

Selection = Literal["random", "attacker"]


class PlanConstraints(_Strict):
    """What the chosen topology must satisfy; None leaves a quantity free."""

    max_edge_flops: int | None = Field(default=None, gt=0, description="edge FLOPs per sample")
    max_edge_params: int | None = Field(default=None, gt=0, description="parameters stored on the device")
    max_storage_bytes: int | None = Field(default=None, gt=0, description="bytes of weights on the device (float32)")
    max_ssim: float | None = Field(default=None, ge=-1.0, le=1.0, description="the attack's SSIM on the targets")


def _default_attack(epochs: int) -> AttackSpec:
    return AttackSpec(name="inverse-network", options={"epochs": epochs})


class PlanSpec(_Strict):
    """A PrivyNet topology search: layers × channel counts × channel selections, under constraints."""

    name: str = "plan"
    seed: int = 0
    data: DataSpec = Field(default_factory=DataSpec)
    public: DataSpec = Field(default_factory=lambda: DataSpec(name="mnist-5k"))
    model: ModelSpec = Field(default_factory=ModelSpec)
    public_train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=5))
    layers: list[str] = Field(min_length=1)
    channels: list[int] = Field(min_length=1, description="channel counts to keep (capped at each layer's width)")
    selections: list[Selection] = Field(default_factory=lambda: list[Selection](["random", "attacker"]))
    selection_epochs: int = Field(default=3, ge=1, description="epochs of the attacker-guided ranking's decoder")
    cloud_train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=3))
    attack: AttackSpec = Field(default_factory=lambda: _default_attack(3))
    verify_attack: AttackSpec = Field(default_factory=lambda: _default_attack(10))
    targets: int = Field(default=64, ge=1, description="test images the attacks reconstruct")
    constraints: PlanConstraints = Field(default_factory=PlanConstraints)
    privacy_margin: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="the planner accepts SSIM <= max_ssim - margin, headroom for a fresh attacker's spread",
    )

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def measurement_key(self) -> str:
        """A hash of what determines each candidate's measurements: everything but the constraints,
        the re-measuring attack and the name. Plans with the same key can share measured candidates."""
        from splitveil.checkpoint import CACHE_FORMAT, config_hash

        excluded = {"constraints", "privacy_margin", "verify_attack", "name"}
        return config_hash({**self.model_dump(mode="json", exclude=excluded), "format": CACHE_FORMAT})


def load_plan_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> PlanSpec:
    """Read and validate a plan spec; dotted ``overrides`` (``{"constraints.max_ssim": 0.5}``) win."""
    path = Path(path)
    raw = read_spec_file(path)  # missing, binary, malformed, empty or not a mapping: one line each
    try:
        return PlanSpec.model_validate(apply_overrides(raw, overrides or {}))
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc, PlanSpec)}") from None
