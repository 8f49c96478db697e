"""Engine: Ray runs the batch: a local instance or a cluster, a pool of actors, retries.

Starts Ray (a local instance: processes of its own, listening on loopback only) or joins
a cluster; touches no files itself (the workers do). Importing this module imports Ray.

* :func:`connect`: without an address, a new local Ray instance sized to this machine
  (never a cluster recorded in Ray's temporary folder by an earlier ``ray start``), bound
  to 127.0.0.1, with Ray's usage statistics off and a token of its own; with ``auto``,
  ``HOST:PORT`` or ``ray://HOST:10001``, join a running cluster (token authentication,
  as clusters started by ``ray start`` require). An already connected Ray is reused.
* :func:`check_nodes`: every node must see the inputs and the output folder at the same
  paths (shared storage), checked on each node before any work starts.
* :class:`Scheduler`: actors that each load the network once take tasks from one queue;
  a task whose worker dies is retried on another (a bounded number of times); progress
  is polled from the busy actors.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import ray
from ray import exceptions as rex

from stream.core.errors import ConfigError, StreamError
from stream.core.settings import StreamSettings

from .options import BatchSettings
from .worker import Task, TaskResult, Worker, check_paths

__all__ = ["Node", "nodes", "connect", "local_env", "start_local", "use_loopback", "pool_size",
           "check_nodes", "TaskEvents", "Scheduler"]

_TOKEN_HELP = ("clusters started by `ray start` use token authentication: copy "
               "~/.ray/auth_token from the head node to this machine (or set RAY_AUTH_TOKEN "
               "or RAY_AUTH_TOKEN_PATH); for a cluster without it, set RAY_AUTH_MODE=disabled")
# The errors that mean a worker process (or its node) is gone, not that the task failed.
_DEATHS = (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError,
           rex.ActorUnavailableError)


@dataclass(frozen=True)
class Node:
    """A machine of the cluster that can run workers."""

    node_id: str
    host: str
    ip: str
    cpus: float

    @property
    def label(self) -> str:
        """``host (ip)`` for messages."""
        return self.host if self.host == self.ip else f"{self.host} ({self.ip})"


def use_loopback() -> None:
    """Make a Ray instance started from this process listen on 127.0.0.1 only.

    Ray binds to the machine's network address unless it believes it runs on a laptop
    (Windows, macOS); this switch says so on Linux too. Ray reads it when imported, so
    the constant is set as well in case Ray was imported before.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def local_env() -> None:
    """Environment for Ray processes started from this one (they inherit it).

    Loopback only (:func:`use_loopback`), Ray's usage statistics off, token
    authentication with a token of this process's own (other users of the machine can
    reach loopback too), no ``RAY_ADDRESS`` (``ray.init`` would join that cluster
    instead), and ``PYTHONPATH`` with the folder that holds ``stream``, so workers import
    this very package.
    """
    use_loopback()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    _token_mode()
    os.environ.pop("RAY_ADDRESS", None)
    root = str(Path(__file__).resolve().parents[2])
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, paths)])


def start_local(num_cpus: int | None = None) -> str:
    """Start a new local Ray instance (loopback, no usage statistics, a token); return its address.

    Always a new one: ``address="local"`` keeps ``ray.init`` from joining the cluster
    named in ``ray_current_cluster`` in Ray's temporary folder, which a ``ray start``
    that was killed rather than stopped leaves behind. See :func:`local_env` for the
    environment its processes get.

    Raises:
        ConfigError: Ray did not come up on loopback (then it is stopped again).
    """
    from stream.engines.base import default_threads

    local_env()
    context = ray.init(address="local", num_cpus=num_cpus or default_threads(),
                       include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                       object_store_memory=128 * 2**20)
    ip = context.address_info.get("node_ip_address")
    if ip != "127.0.0.1":
        ray.shutdown()
        raise ConfigError(f"the local Ray instance came up on {ip}, not on loopback")
    return context.address_info["address"]


def _token_mode() -> None:
    """Turn on Ray's token authentication for this process and the ones it starts.

    Ray reads the mode into its configuration when it is imported; it is read again
    here, as Ray does itself when ``ray.init`` turns the mode on.
    """
    os.environ["RAY_AUTH_MODE"] = "token"
    from ray._raylet import Config

    Config.initialize("")


def _join(address: str) -> None:
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if "RAY_AUTH_MODE" not in os.environ:
        # Clusters started by `ray start` require a token: without one here, say so at
        # once rather than after Ray's connection retries. RAY_AUTH_MODE=disabled opts out.
        _token_mode()
    try:
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    except rex.AuthenticationError as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address}: no token for it "
                          f"here; {_TOKEN_HELP}") from exc
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(f"cannot join the Ray cluster at {address} ({reason}): is it "
                          f"running and the address right? If the token is wrong or missing: "
                          f"{_TOKEN_HELP}") from exc


def nodes() -> list[Node]:
    """The live nodes with CPUs."""
    found = []
    for info in ray.nodes():
        cpus = float(info.get("Resources", {}).get("CPU", 0))
        if info.get("Alive") and cpus > 0:
            found.append(Node(info["NodeID"], info.get("NodeManagerHostname", "?"),
                              info.get("NodeManagerAddress", "?"), cpus))
    return found


@contextlib.contextmanager
def connect(address: str | None, num_cpus: int | None = None) -> Iterator[list[Node]]:
    """Connected to Ray for the block; yield the nodes that can run workers.

    Reuses a connection this process already has (and leaves it open); otherwise starts
    a local instance (``address`` ``None``) or joins a cluster, and shuts the local
    instance down (or leaves the cluster) when the block ends.

    Raises:
        ConfigError: the cluster cannot be reached or has no CPUs.
    """
    owned = not ray.is_initialized()
    if owned:
        if address is None:
            start_local(num_cpus)
        else:
            _join(address)
    try:
        found = nodes()
        if not found:
            raise ConfigError("the Ray cluster has no node with CPUs")
        yield found
    finally:
        if owned:
            ray.shutdown()


def pool_size(found: list[Node], workers: int | None,
              cpus_per_worker: float | None) -> tuple[int, float]:
    """``(workers, CPUs each)``: by default one worker per machine, with all its CPUs.

    Raises:
        ConfigError: no node has as many CPUs as one worker asks for.
    """
    largest = max(n.cpus for n in found)
    total = sum(n.cpus for n in found)
    if cpus_per_worker is None:
        cpus_per_worker = (min(n.cpus for n in found) if workers is None
                           else max(1.0, min(largest, math.floor(total / workers))))
    if cpus_per_worker > largest:
        raise ConfigError(f"--cpus-per-worker {cpus_per_worker:g}: no node has that many "
                          f"CPUs (the largest has {largest:g})")
    fits = sum(math.floor(n.cpus / cpus_per_worker + 1e-9) for n in found)
    return (workers or max(1, fits)), cpus_per_worker


def check_nodes(found: list[Node], files: list[tuple[str, int, int]],
                probe: tuple[str, str], timeout_s: float = 120.0) -> None:
    """Check on every node that it sees ``files`` and the output folder as the driver does.

    Raises:
        ConfigError: one line per node that cannot see something (the first few paths).
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(num_cpus=0, max_retries=0)(check_paths)
    refs = {node: remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node.node_id, soft=False)).remote(files, probe) for node in found}
    lines = []
    for node, ref in refs.items():
        try:
            problems = ray.get(ref, timeout=timeout_s)
        except (rex.RayError, TimeoutError) as exc:
            problems = [f"the check did not run ({type(exc).__name__})"]
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            lines.append(f"node {node.label} cannot see: {'; '.join(problems[:3])}{more}")
    if lines:
        raise ConfigError("inputs and the output folder must be at the same paths on every "
                          "node (shared storage); " + " | ".join(lines))


class TaskEvents(Protocol):
    """What the scheduler tells the run about its tasks (called on the driver's thread)."""

    def wanted(self, task: Task) -> bool:
        """False: drop the task (its file failed already)."""

    def done(self, task: Task, result: TaskResult, where: dict[str, Any]) -> list[Task]:
        """A task finished; return tasks to run next (a join), ahead of the queue."""

    def failed(self, task: Task, reason: str) -> None:
        """A task failed for good (after its retries)."""

    def progress(self, running: list[tuple[Task, int]], workers: list[dict[str, Any]]) -> None:
        """Frames written so far by each running task; the workers and what they do."""


@dataclass(eq=False)
class _Slot:
    actor: Any
    number: int
    ready: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    task: Task | None = None
    attempt: int = 0
    frames: int = 0
    polled: float = 0.0


class _RayWorker(Worker):
    """:class:`Worker` that also says which Ray node it is on."""

    def load(self) -> dict[str, Any]:  # noqa: D102
        info = super().load()
        info["node_id"] = ray.get_runtime_context().get_node_id()
        info["ip"] = ray.util.get_node_ip_address()
        return info


class Scheduler:
    """A pool of worker actors and one queue of tasks, with retries when a worker dies.

    Args:
        settings: the conversion settings (sent to every worker).
        batch: the batch settings (retries, test double).
        workers: actors in the pool.
        cpus_per_worker: CPUs each reserves (and its network's threads).
        poll_s: how often busy workers are asked for their progress.
    """

    def __init__(self, settings: StreamSettings, batch: BatchSettings, workers: int,
                 cpus_per_worker: float, poll_s: float = 0.5) -> None:
        self.retries = batch.retries
        self.poll_s = poll_s
        self.retried = 0  # tasks run again after their worker died or failed
        self._actor_class = ray.remote(max_concurrency=2, max_restarts=0)(_RayWorker)
        self._args = (settings, batch, cpus_per_worker)
        self._cpus = cpus_per_worker
        self._slots: list[_Slot] = []
        self._created = 0
        self._spares = workers * (self.retries + 1)  # replacements for dead workers
        self._loaded_once = False
        self._running: dict[Any, _Slot] = {}
        self._polls: dict[Any, _Slot] = {}
        for _ in range(workers):
            self._add_worker()

    def _add_worker(self) -> None:
        actor = self._actor_class.options(num_cpus=self._cpus,
                                          scheduling_strategy="SPREAD").remote(*self._args)
        slot = _Slot(actor, self._created)
        self._created += 1
        self._slots.append(slot)
        self._running[actor.load.remote()] = slot

    def workers(self) -> list[dict[str, Any]]:
        """Each worker: number, ready, pid, node, and the task it runs."""
        return [{"worker": s.number, "ready": s.ready, **s.info, "frames": s.frames,
                 "task": s.task.name if s.task is not None else None} for s in self._slots]

    def run(self, tasks: Iterable[Task], events: TaskEvents) -> None:
        """Run ``tasks`` (and the tasks ``events.done`` adds) until none is left.

        Raises:
            StreamError: every worker failed to load the network (the first reason).
        """
        queue: deque[tuple[Task, int]] = deque((t, 0) for t in tasks)
        while True:
            self._assign(queue, events)
            working = any(s.task is not None for s in self._slots)
            if not working and not queue:
                return  # workers still loading (or waiting for a node) are not needed
            if not working and not self._slots:
                while queue:
                    events.failed(queue.popleft()[0], "no workers left (they kept dying)")
                return
            refs = list(self._running) + list(self._polls)
            ready, _ = ray.wait(refs, num_returns=1, timeout=self.poll_s) if refs else ([], [])
            for ref in ready:
                if ref in self._polls:
                    self._take_poll(ref)
                else:
                    self._finish(ref, queue, events)
            self._poll(events)

    def _assign(self, queue: deque[tuple[Task, int]], events: TaskEvents) -> None:
        for slot in self._slots:
            while slot.ready and slot.task is None and queue:
                task, attempt = queue.popleft()
                if not events.wanted(task):
                    continue
                slot.task, slot.attempt, slot.frames = task, attempt, 0
                self._running[slot.actor.run.remote(task)] = slot

    def _finish(self, ref: Any, queue: deque[tuple[Task, int]], events: TaskEvents) -> None:
        slot = self._running.pop(ref)
        task, attempt = slot.task, slot.attempt
        try:
            value = ray.get(ref)
        except _DEATHS as exc:
            self._replace(slot)
            if task is None:
                return
            reason = f"worker died ({type(exc).__name__})"
            if attempt < self.retries:
                self.retried += 1
                queue.appendleft((task, attempt + 1))  # the next free worker takes it
            else:
                events.failed(task, f"{reason}, {attempt + 1} times")
            return
        except rex.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else None
            if task is None:  # loading failed: a missing checkpoint fails on every node
                if not self._loaded_once and isinstance(cause, StreamError):
                    raise cause from None
                self._replace(slot)
                return
            slot.task = None
            reason = " ".join(str(cause or exc).split())[:300]
            if isinstance(cause, StreamError) or attempt >= self.retries:
                events.failed(task, reason)
            else:
                self.retried += 1
                queue.appendleft((task, attempt + 1))
            return
        if task is None:
            slot.ready, slot.info = True, value
            self._loaded_once = True
            return
        slot.task = None
        where = {"worker": slot.number, **slot.info}
        for follow in reversed(events.done(task, value, where)):
            queue.appendleft((follow, 0))

    def _replace(self, slot: _Slot) -> None:
        """Drop a dead (or unusable) worker; start another while spares last."""
        with contextlib.suppress(Exception):
            ray.kill(slot.actor, no_restart=True)
        self._slots.remove(slot)
        for ref in [r for r, s in self._polls.items() if s is slot]:
            del self._polls[ref]
        if self._spares > 0:
            self._spares -= 1
            self._add_worker()

    def _poll(self, events: TaskEvents) -> None:
        now = time.monotonic()
        polled = set(self._polls.values())
        for slot in self._slots:
            if slot.task is not None and slot not in polled and now - slot.polled >= self.poll_s:
                slot.polled = now
                self._polls[slot.actor.progress.remote()] = slot
        running = [(s.task, s.frames) for s in self._slots if s.task is not None]
        events.progress(running, self.workers())

    def _take_poll(self, ref: Any) -> None:
        slot = self._polls.pop(ref)
        try:
            name, frames = ray.get(ref)
        except rex.RayError:
            return  # the run's own result tells what happened to the worker
        if slot.task is not None and name == slot.task.name:
            slot.frames = frames

    def close(self) -> None:
        """Stop every worker (their processes end; files they were writing stay temporary)."""
        for slot in self._slots:
            with contextlib.suppress(Exception):
                ray.kill(slot.actor, no_restart=True)
        self._slots.clear()
        self._running.clear()
        self._polls.clear()


