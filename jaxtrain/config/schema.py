"""Structured config schema: one dataclass per config group.

Hydra merges the YAML files of `configs/` onto these dataclasses, so a wrong type
or an unknown key fails at composition time, before anything is built or compiled.
The field names are the public interface (`trainer.steps`, `optim.lr`, ...).
Plain data only, so that `core/` can take these types without importing Hydra.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from omegaconf import MISSING


@dataclasses.dataclass
class MixtureConfig:
  """How often each dataset is drawn (jaxtrain/data/mixture.py)."""

  # A list in dataset order or {dataset: weight}; null = the datasets' own
  # `weight` options when all have one, else proportional to their sizes.
  weights: Any = None


@dataclasses.dataclass
class CurriculumConfig:
  """Mixture weights as a function of the step: none | linear | staged | function."""

  kind: str = "none"
  # linear: start_weights -> end_weights over ramp_steps (null = mixture weights).
  start_weights: Any = None
  end_weights: Any = None
  ramp_steps: int = 1000
  # staged: [{until_step: 500, weights: [...]}, ...]; the last stage lasts (until_step may be null).
  stages: list[Any] = dataclasses.field(default_factory=list)
  # function: "package.module:weights_at", called as weights_at(step) -> weights.
  function: Optional[str] = None


@dataclasses.dataclass
class SamplingConfig:
  """Which examples of a dataset each batch takes: uniform (every example once per
  epoch) | weighted (with replacement) | weighted_no_replacement (weighted epochs)."""

  kind: str = "uniform"
  # The per-example weight column of the weighted kinds (e.g. quality).
  weight_key: Optional[str] = None


@dataclasses.dataclass
class MiningConfig:
  """Hard-example mining: training losses steer sampling (jaxtrain/data/mining.py)."""

  enabled: bool = False
  # Share of the draws by loss (the rest as data.sampling would draw).
  mix: float = 0.5
  # Loss-proportional weights: ema^power, or softmax(ema / temperature) when set.
  power: float = 1.0
  temperature: Optional[float] = None
  # Each example's loss estimate: ema * previous + (1 - ema) * newest loss.
  ema: float = 0.9
  # Steps between table updates; batches sample from a table one update old.
  every: int = 20


@dataclasses.dataclass
class DataConfig:
  """Where the examples come from and how they are batched."""

  name: str = "digits"
  batch_size: int = 256
  eval_batch_size: int = 512
  val_fraction: float = 0.2
  split_seed: int = 0
  shuffle_seed: int = 0
  # Grain read threads and their buffer (0 = read in the loop's thread), and
  # how many batches a separate thread puts on the devices ahead (0 = inline).
  read_threads: int = 2
  prefetch: int = 4
  device_prefetch: int = 2
  # With device_prefetch 0, up to this many train batches (at most 8 MB of them) go to
  # the devices in one transfer: the host pays a transfer's fixed cost once for all of them.
  put_block: int = 8
  # Several datasets: mixture weights, their curriculum over steps, per-example
  # sampling, hard-example mining; one dataset per batch with group_by_dataset.
  mixture: MixtureConfig = dataclasses.field(default_factory=MixtureConfig)
  curriculum: CurriculumConfig = dataclasses.field(default_factory=CurriculumConfig)
  sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
  mining: MiningConfig = dataclasses.field(default_factory=MiningConfig)
  group_by_dataset: bool = False
  # Augmentations in order: names or {name: ..., option: value} (jaxtrain/data/augment.py).
  augment: list[Any] = dataclasses.field(default_factory=list)
  # Grain worker processes reading batches (0 = read in this process).
  worker_count: int = 0
  # data=text: files matching text_glob under text_dir (null = the Python standard
  # library's source), cut at max_bytes, in windows of seq_len + 1 bytes.
  text_dir: Optional[str] = None
  text_glob: str = "*.py"
  seq_len: int = 128
  max_bytes: int = 4 * 2**20
  # data=dataset_dir: a directory of per-dataset YAML files (jaxtrain/data/dataset_dir.py),
  # read in file-name order, at most max_datasets of them (null = all).
  dataset_configs_path: Optional[str] = None
  max_datasets: Optional[int] = None
  # Scan float inputs for NaN/Inf before training (one chunked pass over each file).
  check_finite: bool = True


@dataclasses.dataclass
class ModelConfig:
  """Model components picked by the groups model/encoder, model/latent and model/decoder.

  Each component node is checked against its registered dataclass
  (jaxtrain/models/registry.py); tasks that declare a `model` field receive
  the typed result.
  """

  encoder: Any = dataclasses.field(default_factory=lambda: {"name": "mlp"})
  latent: Any = dataclasses.field(default_factory=lambda: {"name": "none"})
  decoder: Any = dataclasses.field(default_factory=lambda: {"name": "mlp"})
  # Width of the encoder's output and the decoder's input.
  latent_dim: int = 16
  # Gradient checkpointing: none | full (recompute every activation in the
  # backward pass) | dots (keep matmul outputs, recompute the rest).
  remat: str = "none"


@dataclasses.dataclass
class OptimConfig:
  """Optimizer, clipping, weight decay, accumulation and freezing."""

  name: str = "adamw"
  lr: float = 1e-3
  weight_decay: float = 0.0
  clip_norm: Optional[float] = None
  accumulate: int = 1
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  momentum: float = 0.9
  nesterov: bool = False
  # Regexes over '/'-joined param paths; matching params get no updates.
  freeze: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ScheduleConfig:
  """Learning-rate schedule (built from optax's schedule functions)."""

  name: str = "warmup_cosine"
  warmup_steps: int = 100
  # Steps of the decay phase including warmup; null = the whole run.
  decay_steps: Optional[int] = None
  end_lr_factor: float = 0.0
  # step_decay: multiply by decay_rate every decay_every steps.
  decay_every: int = 1000
  decay_rate: float = 0.1
  # cosine_restarts: length of one cycle (warmup included).
  restart_every: int = 500


@dataclasses.dataclass
class MeshConfig:
  """Device mesh shape and how params and optimizer state are laid out on it
  (jaxtrain/core/sharding.py: regex rules, then logical names, then `params`)."""

  name: str = "data_parallel"
  # -1 means "all the remaining devices"; at most one axis may be -1.
  data: int = -1
  fsdp: int = 1
  # Tensor (model) parallelism: devices that split one layer's weights.
  tensor: int = 1
  # Shape rule for params no rule or logical name covers: replicate | fsdp | auto
  # (auto = fsdp when the fsdp axis has more than one device).
  params: str = "auto"
  # Params smaller than this many elements stay replicated under the fsdp rule.
  fsdp_min_size: int = 1024
  # [regex, spec] pairs over '/'-joined param paths, first match wins; a spec
  # names a mesh axis (or a list of axes, or null) per dimension, e.g.
  # [".*decoder.*kernel", [null, tensor]]. Checked before logical names.
  rules: list[Any] = dataclasses.field(default_factory=list)
  # [logical name, mesh axis or list or null] pairs for tasks that name their
  # param axes (lm); null = the built-in table in core/sharding.py.
  logical_rules: Optional[list[Any]] = None
  # Optimizer-state layout: params (like the param it mirrors) | zero1 (also
  # split over the batch axes, so each data-parallel replica holds a slice).
  optimizer: str = "params"


@dataclasses.dataclass
class EarlyStoppingConfig:
  """Stop when a monitored eval metric stops improving."""

  enabled: bool = False
  monitor: str = "val/loss"
  mode: str = "min"
  patience: int = 5
  min_delta: float = 0.0


@dataclasses.dataclass
class TrainerConfig:
  """Length of the run and the cadence of periodic actions."""

  steps: Optional[int] = None
  epochs: Optional[float] = None
  seed: int = 0
  log_every: int = 50
  eval_every: int = 200
  ema_decay: Optional[float] = None
  # Peak dense TFLOP/s of one device, for the MFU of tasks that count their FLOPs
  # (null = look the device up in jaxtrain/core/hardware.py; CPUs are not listed).
  peak_tflops: Optional[float] = None
  # Compute precision: fp32 | bf16 (bf16 forward/backward; params, optimizer
  # state and updates stay float32).
  precision: str = "fp32"
  # Compile ahead of time and stop with one line before the first step when
  # the step's memory estimate exceeds what a device has.
  check_memory: bool = True
  # A step whose loss or gradient norm is NaN/Inf leaves the state unchanged.
  skip_nonfinite: bool = True
  # The default train step reports grad_norm, and the guard above checks it. One more
  # pass over the gradients: ~6% of a step of the digits autoencoder on CPU. With
  # false the guard catches a NaN/Inf loss, not NaN gradients under a finite loss.
  grad_norm: bool = True
  # Stop after this many consecutive skipped steps (0 = never stop).
  max_bad_steps: int = 20
  # Also skip steps whose loss is this many std above the recent mean (null = off).
  spike_zscore: Optional[float] = None
  spike_window: int = 100
  # Dispatched steps allowed to be unfinished at once (0 = no limit).
  max_steps_in_flight: int = 8
  # Train steps per compiled call (a lax.scan over that many batches): one dispatch
  # per call instead of per step. The loop still stops exactly at every eval, log
  # and checkpoint step, with single steps where a whole call does not fit.
  steps_per_call: int = 1
  # heartbeat.json is rewritten at least this often while training.
  heartbeat_secs: float = 30.0
  # Signals that mean "checkpoint now and exit for a requeue" (SLURM: add SIGUSR1).
  preemption_signals: list[str] = dataclasses.field(default_factory=lambda: ["SIGTERM", "SIGINT"])
  # JAX's persistent compilation cache: null = <user cache dir>/jaxtrain/jax_cache, "" = off.
  compilation_cache_dir: Optional[str] = None
  early_stopping: EarlyStoppingConfig = dataclasses.field(default_factory=EarlyStoppingConfig)


@dataclasses.dataclass
class CheckpointConfig:
  """Orbax checkpoint policy."""

  every: int = 500
  keep: int = 2
  monitor: Optional[str] = "val/loss"
  mode: str = "min"
  async_save: bool = True
  # How an async save keeps the loop going (jaxtrain/snapshot.py): device = copy
  # the state on its devices and save from a checkpoint thread (the loop does not
  # wait for the device-to-host copy; one extra state in device memory until it
  # is on the host); none = Orbax's async save, which waits for that copy;
  # auto = device in single-process runs whose devices have room for the copy.
  snapshot: str = "auto"


@dataclasses.dataclass
class RunConfig:
  """Identity and location of the run."""

  name: str = "default"
  # The run's own directory; null = outputs/runs/run_<timestamp>_<name>.
  dir: Optional[str] = None
  root: str = "outputs"
  # auto: continue from the newest checkpoint in run.dir if there is one;
  # never: refuse a run directory that already holds a run; otherwise a path
  # (a run directory or its checkpoints/ folder) to start from.
  resume: str = "auto"


@dataclasses.dataclass
class FigureFamilyConfig:
  """One family of figures (see jaxtrain/actions/plots.py)."""

  enabled: bool = False


@dataclasses.dataclass
class FigureFamiliesConfig:
  """The figure families: logging.families.<name>.enabled."""

  losses: FigureFamilyConfig = dataclasses.field(default_factory=FigureFamilyConfig)
  metrics: FigureFamilyConfig = dataclasses.field(default_factory=FigureFamilyConfig)
  lr: FigureFamilyConfig = dataclasses.field(default_factory=FigureFamilyConfig)
  recon: FigureFamilyConfig = dataclasses.field(default_factory=FigureFamilyConfig)
  latent: FigureFamilyConfig = dataclasses.field(default_factory=FigureFamilyConfig)
  samples: FigureFamilyConfig = dataclasses.field(default_factory=FigureFamilyConfig)


@dataclasses.dataclass
class LoggingConfig:
  """What the run prints and writes."""

  name: str = "default"
  # auto: a rich progress bar on a terminal, plain lines otherwise; bar | plain | none.
  progress: str = "auto"
  # Plain progress lines are rate-limited to one per this many seconds.
  print_every_secs: float = 10.0
  # false: the run leaves no files at all (no run dir, facts, checkpoints,
  # figures, .hydra, summary); the Result still carries summary and state.
  save_artifacts: bool = True
  # Figures in <run_dir>/figures/<family>-<moment>-<step>.png; presets logging=plots_*.
  families: FigureFamiliesConfig = dataclasses.field(default_factory=FigureFamiliesConfig)
  # `eval` figures at every plot_every-th evaluation (0 = only the `end` figures).
  plot_every: int = 4
  # Examples in the reconstruction and sample grids; points in the latent plot.
  plot_examples: int = 8
  plot_points: int = 2000
  # Where logged rows go (jaxtrain/track/writers.py): csv (facts/scalars.csv, always
  # written), jsonl (facts/metrics.jsonl), tensorboard, wandb, mlflow (extras of those names).
  writers: list[str] = dataclasses.field(default_factory=lambda: ["jsonl", "csv"])
  # wandb: offline unless WANDB_MODE says otherwise; the project defaults to "jaxtrain".
  wandb_project: Optional[str] = None
  wandb_entity: Optional[str] = None
  # mlflow: null = a SQLite store in <run_dir>/mlflow.db (MLflow 3 refuses new ./mlruns file stores).
  mlflow_tracking_uri: Optional[str] = None
  mlflow_experiment: str = "jaxtrain"


@dataclasses.dataclass
class DBConfig:
  """The experiment database (jaxtrain/track/db.py, `python -m jaxtrain.runs`)."""

  enabled: bool = True
  # Any SQLAlchemy URL; null = $JAXTRAIN_DB_URL, else sqlite:///<run.root>/experiments.db.
  url: Optional[str] = None
  # SQLite's busy timeout; writes also retry with backoff while the database is locked.
  timeout_secs: float = 30.0


@dataclasses.dataclass
class EvalConfig:
  """What runs on the validation split (jaxtrain/evaluators/), e.g.
  [{name: metrics}, {name: recall_at_k, k: [1, 5]}]; each entry may set
  `every` (steps; null = trainer.eval_every, 0 = only at the end) and `at_end`."""

  evaluators: list[Any] = dataclasses.field(default_factory=lambda: [{"name": "metrics"}])


@dataclasses.dataclass
class DistConfig:
  """Several processes (one per host or per accelerator) on JAX's distributed runtime.

  Each unset value comes from JAXTRAIN_COORDINATOR / JAXTRAIN_NUM_PROCESSES /
  JAXTRAIN_PROCESS_ID (set by the launch/ scripts), then from the cluster
  (jaxtrain/distributed.py).
  """

  # "host:port" of process 0, where the coordination service listens.
  coordinator: Optional[str] = None
  num_processes: Optional[int] = None
  process_id: Optional[int] = None
  # Detect SLURM srun steps, Open MPI, Cloud TPU VMs and Kubernetes Jobs (jax's own detection).
  auto: bool = True
  # Accelerators this process uses (null = all it sees, or one per process under srun/mpirun).
  local_device_ids: Optional[list[int]] = None
  # Seconds to wait for every process at start-up before failing with one line.
  timeout_secs: int = 300
  # Seconds of silence after which a process counts as dead and the others stop.
  heartbeat_timeout_secs: int = 100


@dataclasses.dataclass
class EnvConfig:
  """Where this machine keeps things (configs/env/: local, slurm, or a site's own profile).

  `run.root` follows `output_root`, so the same command runs on a laptop and on a cluster.
  """

  name: str = "local"
  # Data files; data configs may refer to it as ${env.data_root}.
  data_root: str = "data"
  # Run, multirun and sweep directories go under it.
  output_root: str = "outputs"
  # JAX's persistent compilation cache (trainer.compilation_cache_dir follows it);
  # null = <user cache dir>/jaxtrain/jax_cache.
  cache_dir: Optional[str] = None


@dataclasses.dataclass
class SearchParamConfig:
  """One dimension of a sweep's search space, named by the override it sets (e.g. optim.lr)."""

  # float | int | categorical
  type: str = "float"
  low: Optional[float] = None
  high: Optional[float] = None
  # Sample on a log scale (float and int).
  log: bool = False
  # Grid step inside [low, high] (float and int; null = continuous / 1).
  step: Optional[float] = None
  choices: Optional[list[Any]] = None


@dataclasses.dataclass
class SweepConfig:
  """`python -m jaxtrain.sweep`: an Optuna study whose trials are jaxtrain runs."""

  # The search space, {override: {type, low, high, log, step, choices}}; empty = default_params.
  params: dict[str, SearchParamConfig] = dataclasses.field(default_factory=dict)
  # The space when `params` is not given (configs/sweep/default.yaml: optim.lr and optim.weight_decay).
  default_params: dict[str, SearchParamConfig] = dataclasses.field(default_factory=dict)
  # minimize | maximize
  direction: str = "minimize"
  # An eval metric of the trial's run (its last evaluation is the trial's value).
  metric: str = "val/loss"
  # Finished trials (complete or pruned) the study should end with, over all workers.
  n_trials: int = 8
  # Worker processes on this machine, all pulling trials from the same storage.
  n_jobs: int = 1
  # median | hyperband | none: stop trials that lag behind at the same step.
  pruner: str = "median"
  # Trials that always run to the end before the pruner judges others.
  pruner_startup_trials: int = 2
  # Optuna storage URL (sqlite:///..., postgresql://...); null = sqlite in <sweep dir>/study.db.
  storage: Optional[str] = None
  # null = the sweep directory's name.
  study_name: Optional[str] = None
  # The sweep's directory (trial_<k>/ run dirs, study, plots); null = <run.root>/sweeps/sweep_<ts>_<run.name>.
  dir: Optional[str] = None
  # The sampler's seed (TPE).
  seed: int = 0
  # Overrides every trial starts from, before the command line's own (shorter runs, say).
  trial_overrides: list[str] = dataclasses.field(default_factory=list)
  # A running trial's heartbeat; one silent for grace_secs counts as dead and is retried from its checkpoint.
  heartbeat_secs: int = 10
  grace_secs: int = 30


@dataclasses.dataclass
class Config:
  """The whole run configuration."""

  # The task node is checked against the selected task's own dataclass.
  task: Any = MISSING
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
  schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
  mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
  trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
  checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
  run: RunConfig = dataclasses.field(default_factory=RunConfig)
  logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
  dist: DistConfig = dataclasses.field(default_factory=DistConfig)
  env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
  sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)
  db: DBConfig = dataclasses.field(default_factory=DBConfig)
