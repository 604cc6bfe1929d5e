"""Everything the emulator remembers, behind one lock shared by the server and the test thread."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from ._batch import Batch
from ._files import StoredFile
from ._limits import RequestLimit
from ._records import Fault, RecordedRequest


class Clock:
    """Emulator time: wall time at start + real elapsed * speed + manual offset (Unix seconds)."""

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed
        self.offset = 0.0
        self._wall0 = time.time()
        self._mono0 = time.monotonic()

    def now(self) -> float:
        """The current emulator time."""
        return self._wall0 + (time.monotonic() - self._mono0) * self.speed + self.offset


@dataclass
class Settings:
    """How the emulator behaves; fixed at construction."""

    mode: str = "hosted"
    api_key: str | None = None
    provider_api_key: str | None = None
    durations: dict[str, float] = field(default_factory=dict)
    record: bool = True


class State:
    """Batches, files, faults and what was seen. Callers hold `lock` around every use."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.lock = threading.Lock()
        self.batches: dict[str, Batch] = {}
        self.order: list[str] = []  # creation order, for listing newest first
        self.position: dict[str, int] = {}
        self.files: dict[str, StoredFile] = {}
        self.output_files: dict[str, str] = {}  # output file id -> batch id
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self.counts: dict[str, int] = {}
        self.limit: RequestLimit | None = None

    def insert(self, batch: Batch) -> None:
        """Store a new batch (its id must be free)."""
        if batch.id in self.batches:
            raise ValueError(f"batch {batch.id!r} already exists")
        self.batches[batch.id] = batch
        self.position[batch.id] = len(self.order)
        self.order.append(batch.id)
        self.output_files[batch.output_file_id] = batch.id

    def reset(self) -> None:
        """Forget batches, files, faults, requests and counts."""
        self.batches.clear()
        self.order.clear()
        self.position.clear()
        self.files.clear()
        self.output_files.clear()
        self.faults.clear()
        self.requests.clear()
        self.counts.clear()
