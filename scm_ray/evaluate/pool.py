"""The Ray side of evaluation: a pool of long-lived actors and a driver loop that feeds them.

Why actors rather than tasks: an actor builds its FFCV loaders once (their first epoch compiles
for ~20 s) and then evaluates checkpoint after checkpoint. Work is handed out one checkpoint at
a time to whichever actor is free, so one slow checkpoint never holds up the others. When an
actor dies its checkpoint goes back to the front of the queue for another actor (up to
`max_retries` times) and a replacement actor is started while the retry budget lasts.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import ray
from ray.exceptions import RayActorError, RayTaskError

from scm_ray.config import ConfigError, EvaluateJobConfig, from_dict, to_dict
from scm_ray.evaluate.worker import ACTOR_ERROR, RUN_ERROR, CheckpointReport, failed_report


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

    def evaluate(self, checkpoint: str, data_root: str, title: str) -> CheckpointReport:
        report = self.evaluator.evaluate(checkpoint, data_root, title)
        report.row["actor_id"] = ray.get_runtime_context().get_actor_id()
        return report


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
        self.replacements_left = cfg.ray.max_retries
        self.tick_s = tick_s
        self.print_every_s = print_every_s
        self.members = [self._spawn() for _ in range(size)]

    def _spawn(self) -> Member:
        name = f"{self.prefix}-{self.spawned}"
        self.spawned += 1
        pool = self.cfg.ray
        options = {"name": name, "num_cpus": pool.cpus_per_actor, "max_restarts": 0}
        if pool.use_gpu:
            options["num_gpus"] = pool.gpus_per_actor
        return Member(name, EvalActor.options(**options).remote(self.job))

    def shutdown(self) -> None:
        for member in self.members:
            ray.kill(member.handle)
        self.members = []

    def run(self, tasks: list[Task], on_result: Callable[[Task, CheckpointReport, Member | None], None],
            progress: Callable[[PoolStatus], None] | None = None) -> None:
        queue = deque(tasks)
        idle = list(self.members)
        running: dict[ray.ObjectRef, tuple[Member, Task]] = {}
        start = last_print = time.monotonic()
        done = failed = 0

        def status() -> PoolStatus:
            elapsed = time.monotonic() - start
            eta = elapsed / done * (len(tasks) - done) if done else None
            return PoolStatus(done, len(tasks), failed, {t.checkpoint: m.name for m, t in running.values()},
                              elapsed, eta)

        while queue or running:
            while queue and idle:
                member, task = idle.pop(0), queue.popleft()
                task.attempts += 1
                running[member.handle.evaluate.remote(task.checkpoint, task.data_root, task.title)] = (member, task)
            if not running:  # every actor died and no replacement is left
                for task in queue:
                    on_result(task, failed_report(ACTOR_ERROR, "no evaluation actor left (all died)"), None)
                    done, failed = done + 1, failed + 1
                break
            ready, _ = ray.wait(list(running), num_returns=1, timeout=self.tick_s)
            for ref in ready:
                member, task = running.pop(ref)
                report = self._collect(ref, member, task, queue, idle)
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

    def _collect(self, ref, member: Member, task: Task, queue: deque, idle: list) -> CheckpointReport | None:
        """The task's report, or None when it was queued again after its actor died."""
        try:
            report = ray.get(ref)
        except RayActorError as exc:
            self._replace(member, idle)
            if task.attempts <= self.cfg.ray.max_retries:
                print(f"[scm-ray] actor {member.name} died evaluating {task.title}; retrying elsewhere "
                      f"(attempt {task.attempts + 1})", flush=True)
                queue.appendleft(task)
                return None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return failed_report(ACTOR_ERROR, f"the actor evaluating it died {task.attempts} times; last: {first}")
        except RayTaskError as exc:  # evaluate() catches checkpoint errors; this is anything else
            idle.append(member)
            return failed_report(RUN_ERROR, str(exc).strip().splitlines()[-1])
        idle.append(member)
        return report

    def _replace(self, member: Member, idle: list) -> None:
        self.members = [m for m in self.members if m is not member]
        ray.kill(member.handle)
        if self.replacements_left > 0:
            self.replacements_left -= 1
            fresh = self._spawn()
            self.members.append(fresh)
            idle.append(fresh)

