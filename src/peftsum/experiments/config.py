"""Experiment configuration: which runs to make, with what shared budget, evaluated how.

A YAML file maps onto :class:`ExperimentConfig`; unknown keys (top level, in ``train``, in
``generation`` or in a method entry) are errors that name the key and the valid ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from peftsum.config import TrainConfig, apply_overrides, check_keys, load_yaml, make_config
from peftsum.errors import ConfigError
from peftsum.names import check_name, ensure_inside
from peftsum.run_format import RUNS_DIR
from peftsum.run_format import run_id as make_run_id

DEFAULT_CONFIG = "demo.yaml"
"""The embedded default experiment (``peftsum experiment`` with no config)."""


@dataclass
class RunSpec:
    """One training run and the languages it is evaluated on.

    Attributes:
        run_id: folder name, ``<label>-<train languages joined by +>-s<seed>``.
        label: method label (``lora`` or a custom name such as ``lora-r16``).
        train: the training config (output_dir set to the run folder).
        eval_languages: languages to evaluate on (a language not in ``train.languages`` is zero-shot).
    """

    run_id: str
    label: str
    train: TrainConfig
    eval_languages: list[str]


@dataclass
class ExperimentConfig:
    """An experiment: every method x training-language set x seed, with equal budgets.

    Attributes:
        name: experiment name (default output folder ``peftsum_runs/<name>``).
        model: base model (hub id or folder); ``tiny`` = the offline tiny mT5.
        pretrain_steps: lead-bias pretraining steps for the tiny base before fine-tuning (0 = random base;
            see :mod:`peftsum.modeling.pretrain`).
        data: ``sample``, ``hub`` or a local folder.
        methods: method names, or mappings ``{method: lora, name: lora-r16, <TrainConfig keys>}``.
        languages: monolingual runs: each language is trained and evaluated on its own.
        cross_lingual: mappings ``{train: [..], eval: [..]}``: train on one set, evaluate on others.
        seeds: one run per seed.
        train: :class:`~peftsum.config.TrainConfig` keys shared by all runs (the equal budget).
        per_language: ``{language or "a+b": {TrainConfig keys}}`` applied to runs trained on that
            language set, for all methods (e.g. the seed study's 5 epochs for Russian).
        generation: :class:`~peftsum.generation.decode.GenerationSettings` keys.
        eval_samples: evaluation rows per language (``None`` = all).
        eval_split: ``test``/``validation`` (default: test where present).
        eval_batch_size: articles per generate call.
        baselines: also score LEAD-1 and the extractive oracle per evaluation language.
        report: write the report at the end.
    """

    name: str = "experiment"
    model: str = "tiny"
    pretrain_steps: int = 0
    data: str = "sample"
    methods: list = field(default_factory=lambda: ["full", "lora"])
    languages: list[str] = field(default_factory=lambda: ["english"])
    cross_lingual: list[dict] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [42])
    train: dict = field(default_factory=dict)
    per_language: dict = field(default_factory=dict)
    generation: dict = field(default_factory=dict)
    eval_samples: int | None = None
    eval_split: str | None = None
    eval_batch_size: int = 32
    baselines: bool = True
    report: bool = True

    def to_dict(self) -> dict:
        """Plain values (for ``experiment.yaml``)."""
        return asdict(self)


def default_config_path() -> Path:
    """Path of the embedded default experiment YAML."""
    return Path(str(resources.files("peftsum") / "configs" / DEFAULT_CONFIG))


DEFAULT_RUNS_DIR = Path("peftsum_runs")
"""Where experiments go when no folder is given: ``peftsum_runs/<name>`` under the working folder."""


def experiment_dir(cfg: ExperimentConfig, output_dir: str | Path | None = None) -> Path:
    """The experiment's folder: ``output_dir`` when given, else :data:`DEFAULT_RUNS_DIR` / ``cfg.name``."""
    return Path(output_dir) if output_dir is not None else DEFAULT_RUNS_DIR / cfg.name


def load_experiment(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read and validate an experiment YAML (the embedded default when ``path`` is ``None``).

    ``overrides`` are ``KEY=VALUE`` strings applied on top (see :func:`apply_overrides`).

    Raises:
        ConfigError: unknown keys anywhere (named with the valid ones), bad types, unknown
            methods or languages, an experiment with no runs.
    """
    from peftsum.config import check_types

    path = Path(path) if path else default_config_path()
    data = apply_overrides(load_yaml(path), overrides or [])
    where = f"{path}" + (" with --set " + " ".join(overrides) if overrides else "")
    check_keys(ExperimentConfig, data, where)
    check_types(ExperimentConfig, data, where)
    cfg = ExperimentConfig(**data)
    _check_name_and_seeds(cfg, where)
    _check_train(cfg, where)
    _check_generation(cfg, where)
    _check_per_language_keys(cfg, where)
    _check_methods(cfg, where)
    _check_limits(cfg, where)
    _resolve_languages(cfg, where)
    return cfg


def _check_name_and_seeds(cfg: ExperimentConfig, where: str) -> None:
    check_name(f"{where}: name", cfg.name)  # names become folder names: contained (peftsum.names)
    for seed in cfg.seeds if isinstance(cfg.seeds, list) else []:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"{where}: seeds must be whole numbers, got {seed!r}")


def _check_train(cfg: ExperimentConfig, where: str) -> None:
    """``train:`` holds TrainConfig keys, but none that the experiment sets per run."""
    from peftsum.config import check_types

    check_keys(TrainConfig, cfg.train, f"{where} (train)")
    check_types(TrainConfig, cfg.train, f"{where} (train)")
    for bad in ("method", "languages", "language", "output_dir", "seed", "model", "data"):
        if bad in cfg.train:
            raise ConfigError(f"{where} (train): {bad!r} is set per run by the experiment; "
                              "use the top-level methods/languages/seeds/model/data keys")


def _check_generation(cfg: ExperimentConfig, where: str) -> None:
    from peftsum.generation.decode import GenerationSettings

    check_keys(GenerationSettings, cfg.generation, f"{where} (generation)")
    try:
        GenerationSettings(**cfg.generation)
    except ConfigError as exc:
        raise ConfigError(f"{where} (generation): {exc}") from None


def _check_per_language_keys(cfg: ExperimentConfig, where: str) -> None:
    from peftsum.languages import parse_languages

    for key, values in cfg.per_language.items():
        parse_languages(str(key).replace("+", ","))
        check_keys(TrainConfig, values or {}, f"{where} (per_language: {key})")


def _check_methods(cfg: ExperimentConfig, where: str) -> None:
    """Every ``methods:`` entry: a registry method, TrainConfig keys in range, a valid name."""
    from peftsum.modeling.methods import get_method

    if not isinstance(cfg.methods, list) or not cfg.methods:
        raise ConfigError(f"{where}: methods must be a non-empty list, e.g. [full, lora]")
    for entry in cfg.methods:
        spec = {"method": entry} if isinstance(entry, str) else dict(entry)
        if "method" not in spec:
            raise ConfigError(f"{where}: a methods entry needs a 'method' key: {entry!r}")
        extra = {k: v for k, v in spec.items() if k not in ("method", "name")}
        check_keys(TrainConfig, extra, f"{where} (methods: {spec.get('name', spec['method'])})")
        get_method(spec["method"])
        if "name" in spec:
            check_name(f"{where}: methods: name", spec["name"])
        _check_ranges({**cfg.train, **extra}, f"{where} (methods: {spec.get('name', spec['method'])})")


def _check_limits(cfg: ExperimentConfig, where: str) -> None:
    for key, values in cfg.per_language.items():
        _check_ranges({**cfg.train, **(values or {})}, f"{where} (per_language: {key})")
    for name, low in (("pretrain_steps", 0), ("eval_samples", 1), ("eval_batch_size", 1)):
        value = getattr(cfg, name)
        if value is not None and value < low:
            raise ConfigError(f"{where}: {name} must be >= {low}, got {value}")


def _resolve_languages(cfg: ExperimentConfig, where: str) -> None:
    """Canonical names in ``languages`` and ``cross_lingual``; an experiment needs one of them."""
    from peftsum.languages import parse_languages

    cfg.languages = parse_languages(cfg.languages) if cfg.languages else []
    for pair in cfg.cross_lingual:
        if not isinstance(pair, dict) or set(pair) - {"train", "eval"} or "train" not in pair or "eval" not in pair:
            raise ConfigError(f"{where}: cross_lingual entries look like {{train: [english], eval: [russian]}}; "
                              f"got {pair!r}")
        pair["train"], pair["eval"] = parse_languages(pair["train"]), parse_languages(pair["eval"])
    if not cfg.languages and not cfg.cross_lingual:
        raise ConfigError(f"{where}: no runs: set languages or cross_lingual")


def _check_ranges(values: dict, where: str) -> None:
    """Range-check training settings of an experiment before any run starts (:mod:`peftsum.training.ranges`)."""
    from peftsum.training.ranges import check_train_ranges

    train_cfg = make_config(TrainConfig, values, where)
    try:
        check_train_ranges(train_cfg)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def expand_runs(cfg: ExperimentConfig, exp_dir: Path, model_path: str) -> list[RunSpec]:
    """Every run of the experiment, in a stable order (methods x training sets x seeds).

    Args:
        cfg: the experiment.
        exp_dir: experiment folder; runs go to ``exp_dir/runs/<run_id>``.
        model_path: the resolved base model (the tiny base folder for ``model: tiny``).
    """
    sets = [([lang], [lang]) for lang in cfg.languages]
    sets += [(pair["train"], list(dict.fromkeys(pair["train"] + pair["eval"]))) for pair in cfg.cross_lingual]
    runs: list[RunSpec] = []
    seen: set[str] = set()
    for entry in cfg.methods:
        spec = {"method": entry} if isinstance(entry, str) else dict(entry)
        label = spec.pop("name", spec["method"])
        for train_langs, eval_langs in sets:
            for seed in cfg.seeds:
                run_id = make_run_id(label, train_langs, seed)
                if run_id in seen:
                    continue
                seen.add(run_id)
                lang_key = "+".join(train_langs)
                values = {**cfg.train, **(cfg.per_language.get(lang_key) or {}), **spec, "languages": train_langs, "seed": seed, "model": model_path,
                          "data": cfg.data, "output_dir": str(exp_dir / RUNS_DIR / run_id)}
                ensure_inside(exp_dir, values["output_dir"], f"run folder of {run_id!r}")
                runs.append(RunSpec(run_id, label, make_config(TrainConfig, values, run_id), eval_langs))
    return runs
