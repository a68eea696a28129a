"""The Ray side of evaluation: a pool of long-lived actors and a driver loop that feeds them.

Why actors rather than tasks: an actor builds its FFCV loaders once (their first epoch compiles
for ~20 s) and then evaluates checkpoint after checkpoint. Work is handed out one checkpoint at
a time to whichever actor is free, so one slow checkpoint never holds up the others.

When an actor dies its checkpoint goes back to the front of the queue, and a replacement actor
is started whenever checkpoints are waiting. The retry budget is per checkpoint: one that kills
`max_retries + 1` actors (an OOM, a native crash) fails alone, and the rest of the run goes on.
An actor gets work only once its constructor has returned, so one that dies while starting is
no checkpoint's fault; those deaths have their own cap of `max_retries` replacements, so a broken
environment ends the run instead of starting actors forever.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray.exceptions import RayActorError, RayError, RayTaskError, UnserializableException

from scm_ray.config import ConfigError, EvaluateJobConfig, from_dict, to_dict
from scm_ray.evaluate.outcome import ACTOR_ERROR, RUN_ERROR, CheckpointReport, failed_report

# Test-only: names a file whose presence in a checkpoint folder makes the actor crash (see
# _crash_if_marked). Read only inside actors; unset outside tests.
TEST_CRASH_ENV = "SCM_RAY_TEST_CRASH_MARKER"


@ray.remote
class EvalActor:
    """One evaluation process: a device, its loaders, and checkpoints one after another."""

    def __init__(self, job: dict):
        import torch

        from scm_ray.evaluate.worker import CheckpointEvaluator

        cfg = from_dict(EvaluateJobConfig, job)
        torch.set_num_threads(max(1, int(cfg.ray.cpus_per_actor)))
        device = "cuda" if cfg.ray.use_gpu and torch.cuda.is_available() else "cpu"
        self.evaluator = CheckpointEvaluator(cfg, device)

    def ready(self) -> bool:
        """Returns once the constructor has. The driver hands an actor work only after this, so
        a death at start-up is never charged to a checkpoint."""
        return True

    def evaluate(self, checkpoint: str, data_root: str, title: str) -> CheckpointReport:
        _crash_if_marked(checkpoint)
        report = self.evaluator.evaluate(checkpoint, data_root, title)
        report.row["actor_id"] = ray.get_runtime_context().get_actor_id()
        return report


def _crash_if_marked(checkpoint: str) -> None:
    """Test-only trigger: with SCM_RAY_TEST_CRASH_MARKER=NAME in the actor's environment, a
    checkpoint folder holding a file NAME ends the actor's process at once, as an OOM kill or a
    native crash while loading it would. Without the variable (always, outside tests) a no-op."""
    marker = os.environ.get(TEST_CRASH_ENV)
    if marker and (Path(checkpoint) / marker).exists():
        os._exit(1)


@dataclass
class Task:
    """One checkpoint to evaluate; `attempts` counts the actors it was handed to."""

    checkpoint: str
    data_root: str
    title: str
    attempts: int = 0


@dataclass
class Member:
    name: str
    handle: object
    ready: ray.ObjectRef  # resolves once the actor's constructor has returned


@dataclass
class PoolStatus:
    """Passed to the progress callback after every completion and every tick."""

    done: int
    total: int
    failed: int
    running: dict[str, str] = field(default_factory=dict)  # checkpoint -> actor name
    elapsed_s: float = 0.0
    eta_s: float | None = None

    def line(self) -> str:
        eta = "unknown" if self.eta_s is None else f"{self.eta_s:.0f} s"
        return (f"[scm-ray] evaluate {self.done}/{self.total} done ({self.failed} failed), "
                f"{len(self.running)} running, elapsed {self.elapsed_s:.0f} s, ETA {eta}")


def actors_that_fit(cfg: EvaluateJobConfig) -> int:
    """How many actors the connected cluster's nodes can hold at once, node by node."""
    pool = cfg.ray
    total = 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = node.get("Resources", {})
        fit = math.floor(resources.get("CPU", 0) / pool.cpus_per_actor + 1e-9)
        if pool.use_gpu:
            fit = min(fit, math.floor(resources.get("GPU", 0) / pool.gpus_per_actor + 1e-9))
        total += fit
    return total


def pool_size(cfg: EvaluateJobConfig, pending: int, local: bool) -> int:
    """num_actors (0 = all that fit), never more than fit nor than there are checkpoints. On a
    real cluster nothing fitting now may be the autoscaler's job, so it asks for what it wants."""
    fit = actors_that_fit(cfg)
    wanted = cfg.ray.num_actors or fit
    if fit == 0:
        what = f"{cfg.ray.cpus_per_actor:g} CPU" + (f" + {cfg.ray.gpus_per_actor:g} GPU" if cfg.ray.use_gpu else "")
        if local:
            raise ConfigError("ray", f"no evaluation actor ({what}) fits on any node of this Ray")
        print(f"[scm-ray] WARNING no node fits an evaluation actor ({what}) now; waiting for the autoscaler",
              flush=True)
        return max(1, min(wanted or 1, pending))
    return max(1, min(wanted, fit, pending))


class ActorPool:
    """Runs tasks on `size` actors; `on_result(task, report, member)` sees every outcome."""

    def __init__(self, cfg: EvaluateJobConfig, size: int, tick_s: float = 1.0, print_every_s: float = 15.0):
        self.cfg = cfg
        self.job = to_dict(cfg)
        self.prefix = f"scm-ray-eval-{uuid.uuid4().hex[:8]}"
        self.spawned = 0
        self.startup_replacements_left = cfg.ray.max_retries
        self.startup_deaths: list[str] = []  # why each actor that died while starting died
        self.tick_s = tick_s
        self.print_every_s = print_every_s
        self.members: list[Member] = []
        self.starting: dict[ray.ObjectRef, Member] = {}  # ready() ref -> actor still constructing
        self.idle: list[Member] = []  # started, no task
        for _ in range(size):
            self._add_member()

    def _spawn(self) -> Member:
        name = f"{self.prefix}-{self.spawned}"
        self.spawned += 1
        pool = self.cfg.ray
        options = {"name": name, "num_cpus": pool.cpus_per_actor, "max_restarts": 0}
        if pool.use_gpu:
            options["num_gpus"] = pool.gpus_per_actor
        handle = EvalActor.options(**options).remote(self.job)
        return Member(name, handle, handle.ready.remote())

    def _add_member(self) -> None:
        fresh = self._spawn()
        self.members.append(fresh)
        self.starting[fresh.ready] = fresh

    def shutdown(self) -> None:
        for member in self.members:
            ray.kill(member.handle)
        self.members, self.starting, self.idle = [], {}, []

    def run(self, tasks: list[Task], on_result: Callable[[Task, CheckpointReport, Member | None], None],
            progress: Callable[[PoolStatus], None] | None = None) -> None:
        queue = deque(tasks)
        running: dict[ray.ObjectRef, tuple[Member, Task]] = {}
        start = last_print = time.monotonic()
        done = failed = 0

        def status() -> PoolStatus:
            elapsed = time.monotonic() - start
            eta = elapsed / done * (len(tasks) - done) if done else None
            return PoolStatus(done, len(tasks), failed, {t.checkpoint: m.name for m, t in running.values()},
                              elapsed, eta)

        while queue or running:
            while queue and self.idle:
                member, task = self.idle.pop(0), queue.popleft()
                task.attempts += 1
                running[member.handle.evaluate.remote(task.checkpoint, task.data_root, task.title)] = (member, task)
            if not running and not self.starting:  # every actor died while starting; the cap is spent
                for task in queue:
                    on_result(task, failed_report(ACTOR_ERROR, self._no_actor_left()), None)
                    done, failed = done + 1, failed + 1
                break
            ready, _ = ray.wait([*running, *self.starting], num_returns=1, timeout=self.tick_s)
            for ref in ready:
                if ref in self.starting:
                    self._check_started(self.starting.pop(ref))
                    continue
                member, task = running.pop(ref)
                report = self._collect(ref, member, task, queue)
                if report is not None:
                    on_result(task, report, member)
                    done += 1
                    failed += report.row.get("status") != "ok"
                    print(f"{status().line()}; {task.title}: {report.row.get('status')}", flush=True)
                    last_print = time.monotonic()
            if time.monotonic() - last_print >= self.print_every_s:
                print(status().line(), flush=True)
                last_print = time.monotonic()
            if progress is not None:
                progress(status())

    def _check_started(self, member: Member) -> None:
        """A constructed actor becomes idle; one that died constructing is replaced while the
        start-up cap lasts (a broken environment would otherwise start actors forever)."""
        try:
            ray.get(member.ready)
        except RayError as exc:  # RayActorError, or an error from __init__ that does not unpickle
            reason = _death_reason(exc)
            self.startup_deaths.append(reason)
            print(f"[scm-ray] actor {member.name} died while starting: {reason}", flush=True)
            self._remove(member)
            if self.startup_replacements_left > 0:
                self.startup_replacements_left -= 1
                self._add_member()
            return
        self.idle.append(member)

    def _collect(self, ref, member: Member, task: Task, queue: deque) -> CheckpointReport | None:
        """The task's report, or None when it was queued again after its actor died."""
        try:
            report = ray.get(ref)
        except (RayActorError, UnserializableException) as exc:
            # Unserializable: an error the actor could not send back; handled as a death (the
            # actor is replaced either way).
            return self._actor_died(member, task, _death_reason(exc), queue)
        except RayTaskError as exc:  # evaluate() catches checkpoint errors; this is anything else
            self.idle.append(member)
            return failed_report(RUN_ERROR, str(exc).strip().splitlines()[-1])
        self.idle.append(member)
        return report

    def _actor_died(self, member: Member, task: Task, reason: str, queue: deque) -> CheckpointReport | None:
        """Requeue the task, or fail it alone once it has killed max_retries + 1 actors, and
        start a replacement whenever tasks wait (the budget is the task's, not the pool's)."""
        self._remove(member)
        report = None
        if task.attempts <= self.cfg.ray.max_retries:
            print(f"[scm-ray] actor {member.name} died evaluating {task.title}; retrying on another actor "
                  f"(attempt {task.attempts + 1})", flush=True)
            queue.appendleft(task)
        else:
            report = failed_report(ACTOR_ERROR, f"each of the {task.attempts} actors that evaluated it died "
                                   f"(ray.max_retries={self.cfg.ray.max_retries}); last: {reason}")
        if queue:
            self._add_member()
        return report

    def _remove(self, member: Member) -> None:
        self.members = [m for m in self.members if m is not member]
        ray.kill(member.handle)

    def _no_actor_left(self) -> str:
        deaths = self.startup_deaths
        last = f"; last: {deaths[-1]}" if deaths else ""
        return (f"no evaluation actor left: {len(deaths)} died while starting (replaced up to "
                f"ray.max_retries={self.cfg.ray.max_retries} times){last}")


def _death_reason(exc: Exception) -> str:
    """One line: Ray's own first line, or, for an error raised by the actor's constructor or one
    that could not be unpickled, the last line of its original traceback (the exception itself,
    not Ray's pointer to the actor or the docs)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    lines = text.splitlines()
    from_traceback = isinstance(exc, UnserializableException) or "error raised in its creation task" in lines[0]
    return lines[-1].strip() if from_traceback else lines[0]
