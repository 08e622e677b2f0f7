"""Where a run executes: one process, or one rank of a torch.distributed job started by torchrun.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``; :meth:`World.join` reads them, joins
the process group, puts the rank on ``cuda:LOCAL_RANK`` when asked for ``cuda``, and on CPU divides the machine's
cores between the ranks of one machine. A single process is the world of size 1: the same code, no process group.

The ranks exchange only small Python objects (labels, the plan, fingerprints), so they talk over gloo, with a
timeout on every collective, also when the work itself runs on GPUs.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from semantic_pullbacks.errors import InvalidInputError
from semantic_pullbacks.evaluation.job import JobFailedError

__all__ = ["DEFAULT_TIMEOUT", "World"]

#: seconds a collective waits for every rank (the start-up steps: labels, plan); the work itself has no collective
DEFAULT_TIMEOUT = 1800.0
_ENV = ("RANK", "WORLD_SIZE")


@dataclass
class World:
    """This process's place in the job: ``rank`` of ``size``, ``local_rank`` of ``local_size`` on its machine, and
    the ``device`` it computes on."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    timeout: float = DEFAULT_TIMEOUT
    group: Any = None
    connected: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"rank {self.rank} of {self.size}"

    # ------------------------------------------------------------------------------------------ joining
    @classmethod
    @contextlib.contextmanager
    def join(
        cls,
        device: str | torch.device | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        threads: int | None = None,
    ) -> Iterator[World]:
        """The world of this process, for the duration of a ``with`` block.

        Under torchrun (or once ``torch.distributed`` is initialised by the caller) this is one rank of the job;
        otherwise a world of one. A process group this call creates is destroyed on leaving the block, and the
        number of torch threads it changes is restored.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise InvalidInputError(f"timeout must be a positive number of seconds, got {timeout!r}")
        import torch.distributed as dist

        handed = dist.is_available() and dist.is_initialized()
        launched = all(k in os.environ for k in _ENV) and _launch_variables()["WORLD_SIZE"] >= 1
        world = cls(timeout=float(timeout))
        created = False
        if handed or launched:
            if not dist.is_available():
                raise InvalidInputError("this torch build has no torch.distributed; run without torchrun")
            span = datetime.timedelta(seconds=float(timeout))
            if not handed:
                _check_rendezvous()
                _rendezvous(span)
                created = True
            world.rank, world.size = dist.get_rank(), dist.get_world_size()
            variables = _launch_variables()
            world.local_rank = variables.get("LOCAL_RANK", world.rank)
            world.local_size = variables.get("LOCAL_WORLD_SIZE", world.size)
            # a handed group may be nccl-only: the small objects the ranks exchange go over a gloo group of ours
            world.group = dist.new_group(backend="gloo", timeout=span) if handed else None
            world.connected = True
        world.device = world._device(device)
        previous_threads = torch.get_num_threads()
        wanted = threads if threads is not None else world._fair_threads()
        if wanted is not None:
            torch.set_num_threads(wanted)
        try:
            yield world
        finally:
            torch.set_num_threads(previous_threads)
            if created and dist.is_initialized():
                dist.destroy_process_group()

    def _device(self, device: str | torch.device | None) -> torch.device:
        """``cuda`` without an index becomes this rank's GPU, ``cuda:LOCAL_RANK``."""
        try:
            d = torch.device(device if device is not None else "cpu")
        except (RuntimeError, ValueError):
            raise InvalidInputError(f"device {device!r} is not a torch device; use e.g. cpu, cuda or mps") from None
        if d.type == "cuda":
            if not torch.cuda.is_available():
                raise InvalidInputError(f"device {str(d)!r}: CUDA is not available here; use cpu (--device cpu)")
            if d.index is None:
                d = torch.device("cuda", self.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(d)
        return d

    def _fair_threads(self) -> int | None:
        """On CPU, the cores of this machine shared out between its ranks (None: leave torch's choice)."""
        if self.device.type != "cpu" or self.local_size <= 1:
            return None
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        return max(1, cores // self.local_size)

    # ------------------------------------------------------------------------------------------ collectives
    def all_gather(self, obj: Any, what: str) -> list[Any]:
        """Every rank's ``obj``, in rank order (a world of one: ``[obj]``); ``what`` names the step for errors."""
        if not self.connected:
            return [obj]
        import torch.distributed as dist

        self._meet(what)
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def broadcast(self, obj: Any, what: str) -> Any:
        """Rank 0's ``obj`` on every rank; ``what`` names the step for errors."""
        if not self.connected:
            return obj
        import torch.distributed as dist

        self._meet(what)
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def _meet(self, what: str) -> None:
        """Wait until every rank reaches ``what``, at most ``timeout`` seconds; on failure, say which rank is
        missing (gloo's monitored barrier reports the ranks that did not arrive)."""
        import torch.distributed as dist

        try:
            span = datetime.timedelta(seconds=self.timeout)
            dist.monitored_barrier(group=self.group, timeout=span, wait_all_ranks=True)
        except RuntimeError as err:
            raise JobFailedError(
                f"{self.describe()}: not every rank reached {what} within {self.timeout:g} s ({err}); a rank that "
                "crashed or hangs before this step shows its own error in its output"
            ) from None


def _check_rendezvous() -> None:
    """RANK and WORLD_SIZE alone do not say where the ranks meet: torch would fail with a bare ValueError."""
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise InvalidInputError(
            f"RANK and WORLD_SIZE are set but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not, so "
            "the processes cannot find each other: launch with torchrun (torchrun --nproc-per-node N -m "
            "semantic_pullbacks ...), or set MASTER_ADDR and MASTER_PORT to rank 0's address and a free port, or "
            "unset RANK and WORLD_SIZE for a single process"
        )


def _launch_variables() -> dict[str, int]:
    """RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE as set, checked before any work (``WORLD_SIZE=two`` would
    fail in torch with a bare ValueError, ``RANK=5 WORLD_SIZE=2`` hang until the timeout)."""
    out: dict[str, int] = {}
    for name in (*_ENV, "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        text = os.environ.get(name)
        if text is None:
            continue
        try:
            out[name] = int(text.strip())
        except ValueError:
            raise InvalidInputError(
                f"{name}={text!r} is not a whole number: launch with torchrun, which sets it, or unset it"
            ) from None
    for size, rank in (("WORLD_SIZE", "RANK"), ("LOCAL_WORLD_SIZE", "LOCAL_RANK")):
        if size in out and out[size] < 1:
            raise InvalidInputError(f"{size}={out[size]}: a job has at least 1 process")
        if rank in out and not 0 <= out[rank] < out.get(size, out[rank] + 1):
            raise InvalidInputError(
                f"{rank}={out[rank]} is not a rank of {size}={out.get(size)} (ranks are 0 to {size} - 1)"
            )
    return out


def _rendezvous(span: datetime.timedelta) -> None:
    """Join the process group; when rank 0 never answers, one error naming the address instead of torch's
    traceback (torch's own log lines of the attempt are dropped then, kept otherwise)."""
    import torch.distributed as dist

    address = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
    with _captured_stderr() as failed:
        try:
            dist.init_process_group("gloo", timeout=span)
        except (RuntimeError, ValueError) as err:  # DistNetworkError, DistStoreError: RuntimeErrors
            failed.append(True)
            rank = os.environ.get("RANK")
            raise JobFailedError(
                f"rank {rank} could not meet the other ranks at {address} within {span.total_seconds():g} s "
                f"({str(err).splitlines()[0] if str(err) else type(err).__name__}): start every rank (torchrun "
                "does), check MASTER_ADDR and MASTER_PORT (rank 0's address and a free port), or raise --timeout"
            ) from None


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[bool]]:
    """Hold what is written to file descriptor 2 (torch's C++ logs) meanwhile; replay it unless the caller
    marks the attempt failed."""
    import sys
    import tempfile

    failed: list[bool] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded): nothing to hold
        yield failed
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield failed
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                held.seek(0)
                os.write(2, held.read())
