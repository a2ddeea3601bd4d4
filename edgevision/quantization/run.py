"""What a quantization and its accuracy guard need from the run they are part of, as a protocol: the pipeline's
Context (pipeline/context.py) is one; a test or a script can pass any object with these members."""
from __future__ import annotations

from typing import Any, Callable, Protocol, TypeVar

import numpy as np

from edgevision.data.loader import DataConfig
from edgevision.data.sources import ImageSource
from edgevision.quantization.budget import Guard, GuardClock

S = TypeVar("S")


class QuantizationRun(Protocol):
    threads: int
    eval_source: ImageSource  # the guards check on (a sample of) the run's evaluation data
    guard: Guard  # the accuracy budget
    guard_clock: GuardClock  # how long the guards may take

    @property
    def seed(self) -> int: ...

    @property
    def input_size(self) -> tuple[int, int, int]: ...

    @property
    def data_config(self) -> DataConfig: ...  # timm's preprocessing of the model

    def settings(self, kind: type[S]) -> S: ...  # the recipe's section of that type (NNCFSettings, QDQSettings)

    def calibration(self) -> list[np.ndarray]: ...

    def more_calibration(self) -> list[np.ndarray] | None: ...

    def memo(self, key: Any, make: Callable[[], Any]) -> Any: ...

    def warn(self, message: str) -> None: ...

    def log(self, message: str) -> None: ...
