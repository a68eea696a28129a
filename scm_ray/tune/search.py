"""Hyperparameter search: Ray Tune trials, each a whole Ray Train run with its own worker group
(or, with `ray.num_workers: 0`, the engine in the trial's own process: scm_ray/tune/in_process.py).

The trainable is a plain function (docs/architecture.md): it builds the trial's TrainJobConfig from
the base config and the sampled values, builds the same TorchTrainer `scm-ray train` would, and
fits it with Tune's report callback so every epoch's metrics reach the scheduler. Why this shape:
  * resources: the trainable reserves no CPU; the trial's TorchTrainer reserves its workers'
    (all at once, as one placement group), and at most as many trials run as the cluster fits,
    so trials never hold half a worker group each and wait for one another forever; the
    groups of trials Tune stops are released by `reaper.WorkerGroupReaper`;
  * fault tolerance and resume: the trial's training run lives at <experiment>/runs/<trial_id>
    on the search's storage (every node reaches it). Ray Train restarts a failed worker group
    from that run's latest checkpoint (ray.max_failures), and a trial Tune restarts (after a
    lost trial actor, or when an interrupted search is resumed) fits the same run again, which
    Ray Train resumes from its latest checkpoint instead of epoch 0.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from scm_ray.config import ConfigError, TrainJobConfig, to_dict
from scm_ray.interrupts import Interrupted
from scm_ray.tune.config import TuneJobConfig
from scm_ray.tune.interrupt import stop_search_on_ctrl_c
from scm_ray.storage import absolute, filesystem, run_location
from scm_ray.paths import writable_storage
from scm_ray.tune.space import spec_kind
from scm_ray.tune.trial import trial_run_config

RUNS_FOLDER = "runs"
SETTINGS_FILE = "search_settings.json"  # in the experiment folder: the settings it started with


@dataclass
class SearchPlan:
    """Where a search lives and what every trial starts from (crosses Ray as a dict)."""

    experiment: str  # <storage>/<name>: Tune's experiment folder and this module's outputs
    storage: str
    name: str
    base: dict  # the training sections of the tune config
    max_concurrent: int
    loopback: bool = False  # the embedded local Ray: trials' DDP set up without a network listener

    @property
    def runs_root(self) -> str:
        return f"{self.experiment}/{RUNS_FOLDER}"


def experiment_location(cfg: TuneJobConfig, default_name: str) -> tuple[str, str, str]:
    """(storage, name, experiment folder); a local storage path is made absolute (Ray needs it)."""
    return run_location(cfg.search.storage_path or cfg.ray.storage_path, cfg.search.name, default_name)


def run_trial(config: dict, plan: dict) -> None:
    """Tune's trainable: one trial = one Ray Train run, its reports forwarded to Tune."""
    from scm_ray.startup import StartupClock

    startup = StartupClock.for_trial()
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from scm_ray.train.trainer import build_trainer, check_resumable

    trial_id = tune.get_context().get_trial_id()
    runs_root = plan["runs_root"]
    cfg = trial_run_config(plan["base"], config, plan, trial_id)
    run_dir = f"{runs_root}/{trial_id}"
    check_resumable(cfg, run_dir)  # the search-level check covers this; a trial never mixes
    startup.mark("trial")
    trainer = build_trainer(cfg, runs_root, trial_id, run_dir, extra_callbacks=[TuneReportCallback()],
                            train_fn=trial_worker, loopback=plan.get("loopback", False), startup=startup)
    trainer.fit()  # raises when the run fails for good: Tune records the trial as errored


def trial_worker(loop_config: dict) -> None:
    """A trial's Ray Train worker function: record the worker group (for the reaper), then
    train; a run restored at its last epoch reports that epoch again instead."""
    from scm_ray.train.ray_adapter import train_worker
    from scm_ray.tune.reaper import record_worker_group

    record_worker_group(loop_config["run_dir"])
    if not report_finished_run(loop_config["job"]["train"]["epochs"]):
        train_worker(loop_config)


def report_finished_run(epochs: int) -> bool:
    """When the checkpoint Ray Train restores is the run's last epoch, report that epoch's
    metrics again (every rank: a report is a barrier) and return True.

    Why: a search driver killed after a trial's last checkpoint but before Tune marked the
    trial finished leaves it unfinished; its restored run trains 0 epochs, and a trial that
    reports nothing fails Tune's metric check on every resume. Only meta.json is read."""
    import ray.train

    from scm_ray.checkpoint import META_FILE

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return False
    with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{META_FILE}") as stream:
        meta = json.loads(stream.read().decode())
    if int(meta["epoch"]) < epochs:
        return False
    if ray.train.get_context().get_world_rank() == 0:
        print(f"[scm-ray] the run finished at epoch {meta['epoch']}; reporting its final metrics",
              flush=True)
    ray.train.report(meta["metrics"], checkpoint=None)
    return True


# Fields a resumed search may change: those a resumed training run may, and how the search
# is found and paced (not what it searches or how it ranks).
SEARCH_RESUMABLE = ("search.resume", "search.name", "search.storage_path",
                    "search.max_concurrent_trials")


def check_search_resumable(cfg: TuneJobConfig, experiment: str) -> None:
    """A resumed search must have the settings it started with (base config and search
    section): Tune restores its trials with the new trainable, so a change would silently
    train some epochs one way and the rest another. Same check as `scm-ray train`'s."""
    from scm_ray.train.trainer import RESUMABLE_CHANGES, changed_settings

    fs, path = filesystem(f"{experiment}/{SETTINGS_FILE}")
    try:
        with fs.open_input_stream(path) as stream:
            saved = json.loads(stream.read().decode())
    except FileNotFoundError:
        return  # started before settings were recorded: nothing to compare with
    except (OSError, ValueError) as err:
        raise ConfigError("search.resume", f"{experiment}/{SETTINGS_FILE} cannot be read ({err}); "
                                           "start a new search (another search.name)") from err
    changed = changed_settings(saved, to_dict(cfg), RESUMABLE_CHANGES + SEARCH_RESUMABLE)
    if changed:
        raise ConfigError("search.resume", f"{experiment} holds a search started with other settings "
                          f"({'; '.join(changed)}); resuming would mix them: choose a new "
                          "search.name, or give the search's own settings to continue it")


def record_settings(cfg: TuneJobConfig, experiment: str) -> None:
    from scm_ray.train.history import write_text

    write_text(experiment, SETTINGS_FILE, json.dumps(to_dict(cfg), indent=1, sort_keys=True))


# ----------------------------------------------------------------------------------------------
# Space, searcher, scheduler, concurrency
# ----------------------------------------------------------------------------------------------


def tune_domain(kind: str, args: list, grid: bool) -> Any:
    """A checked space entry as a Ray Tune domain. randint's upper end is inclusive here
    (the YAML reads [0, 4] as 0..4), so it becomes Tune's exclusive randint(low, high + 1)."""
    from ray import tune

    if kind == "grid_search" or (grid and kind == "choice"):
        return tune.grid_search(list(args))
    if kind == "choice":
        return tune.choice(list(args))
    if kind == "randint":
        return tune.randint(args[0], args[1] + 1)
    if kind == "loguniform":
        return tune.loguniform(*args)
    return tune.uniform(*args)


def param_space(cfg: TuneJobConfig) -> dict:
    grid = cfg.search.searcher == "grid"
    return {name: tune_domain(*spec_kind(name, spec), grid=grid)
            for name, spec in cfg.search.space.items()}


def build_searcher(cfg: TuneJobConfig, max_concurrent: int):
    """Tune search algorithm for search.searcher (seeded: a search can be repeated), holding
    at most `max_concurrent` trials running at once."""
    search = cfg.search
    if search.searcher == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        optuna = OptunaSearch(metric=search.metric, mode=search.mode, seed=search.seed)
        return ConcurrencyLimiter(optuna, max_concurrent=max_concurrent)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(max_concurrent=max_concurrent, random_state=search.seed)


def build_scheduler(cfg: TuneJobConfig):
    """ASHA on the trials' `epoch` (not Tune's iteration count, which restarts at 1 when a
    resumed trial's run continues from epoch k), up to the longest trial's epochs (a searched
    train.epochs included), or FIFO (no early stopping)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sched = cfg.search.scheduler
    if sched.kind == "none":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="epoch", max_t=cfg.asha_max_t(),
                         grace_period=sched.grace_period, reduction_factor=sched.reduction_factor)


def trials_that_fit(cfg: TrainJobConfig, resources: dict) -> int:
    """How many trials' worker groups the cluster holds at once (by CPUs, and GPUs if used);
    an in-process trial (ray.num_workers 0) holds one worker's resources."""
    workers = max(1, cfg.ray.num_workers)
    fits = math.floor(resources.get("CPU", 0) / (workers * cfg.ray.cpus_per_worker) + 1e-9)
    if cfg.ray.use_gpu:
        fits = min(fits, math.floor(resources.get("GPU", 0) / (workers * cfg.ray.gpus_per_worker) + 1e-9))
    return fits


def concurrency(cfg: TuneJobConfig, resources: dict, embedded: bool) -> tuple[int, str]:
    """(trials at once, a line telling the user what fits). A cluster that fits no trial is an
    error on the embedded local Ray (it cannot grow); elsewhere the autoscaler may add nodes."""
    per_trial = (f"{cfg.ray.num_workers} worker(s) x {cfg.ray.cpus_per_worker:g} CPU" if cfg.ray.num_workers
                 else f"its own process, {cfg.ray.cpus_per_worker:g} CPU")
    if cfg.ray.use_gpu:
        per_trial += f" + {cfg.ray.gpus_per_worker:g} GPU"
    have = f"{resources.get('CPU', 0):g} CPUs" + (f", {resources.get('GPU', 0):g} GPUs" if cfg.ray.use_gpu else "")
    fits = trials_that_fit(cfg, resources)
    if fits == 0:
        message = f"one trial needs {per_trial} but the cluster has {have}"
        if embedded:
            raise ConfigError("ray", message)
        return 1, f"{message}: running 1 trial at a time, waiting for the autoscaler"
    asked = cfg.search.max_concurrent_trials
    chosen = min(asked, fits) if asked else fits
    line = f"{fits} trial(s) fit at once ({have}; each trial {per_trial}); running up to {chosen} at once"
    if asked > fits:
        line += f" (search.max_concurrent_trials={asked} capped)"
    return chosen, line


# ----------------------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------------------


def trial_resources(cfg: TrainJobConfig) -> dict:
    """What Tune reserves for a trial's actor. A Ray Train trial: no CPU (its TorchTrainer
    reserves the workers'; Tune refuses a trial that reserves nothing at all, hence one byte of
    memory). An in-process trial (ray.num_workers 0): one worker's CPUs and GPUs."""
    if cfg.ray.num_workers:
        return {"cpu": 0, "memory": 1}
    resources = {"cpu": cfg.ray.cpus_per_worker}
    if cfg.ray.use_gpu:
        resources["gpu"] = cfg.ray.gpus_per_worker
    return resources


def _trainable(cfg: TuneJobConfig, plan: SearchPlan):
    from ray import tune

    plan_dict = {"runs_root": plan.runs_root, "base": plan.base, "loopback": plan.loopback,
                 "name": plan.name, "storage": plan.storage}
    if cfg.ray.num_workers == 0:
        from scm_ray.tune.in_process import run_trial_in_process as trial
    else:
        trial = run_trial
    return tune.with_resources(tune.with_parameters(trial, plan=plan_dict), trial_resources(cfg))


def build_tuner(cfg: TuneJobConfig, plan: SearchPlan):
    """A new Tuner for the search, or the interrupted one restored from its experiment folder."""
    from ray import tune

    from scm_ray.tune.progress import TrialTable
    from scm_ray.tune.reaper import WorkerGroupReaper

    trainable = _trainable(cfg, plan)
    if cfg.search.resume and tune.Tuner.can_restore(plan.experiment):
        print(f"[scm-ray] resuming the search in {plan.experiment}", flush=True)
        # Finished trials stay as they are; unfinished and errored ones run again, and their
        # training runs resume from their latest checkpoints.
        return tune.Tuner.restore(plan.experiment, trainable, resume_unfinished=True,
                                  resume_errored=True)
    if cfg.search.resume:
        print(f"[scm-ray] nothing to resume at {plan.experiment}; starting the search", flush=True)
    return tune.Tuner(
        trainable,
        param_space=param_space(cfg),
        tune_config=tune.TuneConfig(
            metric=cfg.search.metric, mode=cfg.search.mode, num_samples=cfg.search.num_samples,
            search_alg=build_searcher(cfg, plan.max_concurrent), scheduler=build_scheduler(cfg),
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=plan.name, storage_path=plan.storage,
            # A lost trial actor restarts the trial; its run resumes from its checkpoint.
            failure_config=tune.FailureConfig(max_failures=cfg.ray.max_failures),
            callbacks=[WorkerGroupReaper(plan.runs_root),
                       TrialTable(cfg.search.metric, cfg.search.mode, list(cfg.search.space))],
            verbose=0,  # Tune's own table: see scm_ray/tune/progress.py
        ),
    )


def prepare(cfg: TuneJobConfig, default_name: str) -> tuple[TuneJobConfig, SearchPlan]:
    """Everything that can fail before a trial starts: data, connection, what fits. Returns
    the config the search runs with (a local data.root made absolute) and its plan."""
    from scm_ray import ray_session
    from scm_ray.train.trainer import check_dataset, check_metric, check_model

    import ray

    from ray import tune

    check_model(cfg)
    check_dataset(cfg)
    check_metric(cfg, "ray.checkpoint_metric", cfg.ray.checkpoint_metric)
    check_metric(cfg, "search.metric", cfg.search.metric)
    # trials run in Tune's trial folders (and on other nodes): a local data.root made absolute
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=absolute(cfg.data.root)))
    storage, name, experiment = experiment_location(cfg, default_name)
    writable_storage("search.storage_path" if cfg.search.storage_path else "ray.storage_path", storage)
    if not cfg.search.resume and tune.Tuner.can_restore(experiment):
        raise ConfigError("search.name", f"an experiment already exists at {experiment}; "
                                         "set search.resume=true to continue it, or another search.name")
    if cfg.search.resume:
        check_search_resumable(cfg, experiment)
    print(f"[scm-ray] {ray_session.connect(cfg.ray.address)}", flush=True)
    embedded = ray_session.is_local_embedded(cfg.ray.address)
    # One worker must fit a node; whether a whole trial fits the cluster is `concurrency`'s call.
    problems = ray_session.check_resources(1, cfg.ray.cpus_per_worker, cfg.ray.gpus_per_worker,
                                           cfg.ray.use_gpu)
    if problems and embedded:
        raise ConfigError("ray", "; ".join(problems))
    max_concurrent, line = concurrency(cfg, ray.cluster_resources(), embedded)
    print(f"[scm-ray] {line}", flush=True)
    return cfg, SearchPlan(experiment=experiment, storage=storage, name=name, base=cfg.base_dict(),
                           max_concurrent=max_concurrent, loopback=ray_session.is_loopback_only())


def run_search(cfg: TuneJobConfig, default_name: str = "tune"):
    """Validate, connect, search, then write the experiment's outputs (scm_ray.tune.report).
    Returns the report's SearchSummary."""
    from ray import tune

    from scm_ray.tune.report import summarise

    cfg, plan = prepare(cfg, default_name)
    print(f"[scm-ray] experiment folder: {plan.experiment}", flush=True)
    if not (cfg.search.resume and tune.Tuner.can_restore(plan.experiment)):
        record_settings(cfg, plan.experiment)
    if "mlflow" in cfg.train.tracking:
        from scm_ray.train.tracking import create_mlflow_experiment, mlflow_uri

        create_mlflow_experiment(mlflow_uri(cfg, plan.storage), cfg.train.mlflow_experiment or plan.name)
    start = time.perf_counter()
    with stop_search_on_ctrl_c() as interrupt:
        results = build_tuner(cfg, plan).fit()
    if interrupt.requested:  # Tune saved its state; the tables are written when the search ends
        raise Interrupted(f"the same command and --set search.name={plan.name} --set search.resume=true")
    return summarise(cfg, plan.experiment, plan.runs_root, results, time.perf_counter() - start)
