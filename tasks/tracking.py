"""Everything MLflow, in one module: runs, params, metrics, data sets, plots and the model registry.

Layout: one experiment per project (``config.name``), a
parent run per evolution, a nested run per round and one per stage. A run carries an
``evomath.key`` tag; starting a run whose key matches an unfinished run (a killed round) continues
that run instead of opening a duplicate, so a resumed round reads as one run in the UI.

The tracking URI is ``$MLFLOW_TRACKING_URI`` (the server ``evomath up`` starts), else a SQLite
store in ``<run_dir>/mlflow/`` with artifacts beside it; the server uses the same files, so runs
made without it show up once it starts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlparse

from pydantic import BaseModel

from evomath.models import models_dir, register_uri_resolver

CHAMPION = "champion"
KEY_TAG = "evomath.key"
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"  # the UI's runs and charts
SCORE_TAG = "score"
TREE_SAMPLES = 3
_current_uri: str | None = None  # the URI of the last Tracker made in this process


def store_dir(run_dir: str | Path) -> Path:
    return Path(run_dir).resolve() / "mlflow"


def default_tracking_uri(run_dir: str | Path = "runs") -> str:
    return f"sqlite:///{store_dir(run_dir) / 'mlflow.db'}"


def artifacts_root(tracking_uri: str) -> Path | None:
    """Where a SQLite store keeps artifacts (beside the database); None for a server."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"


def tracking_uri(run_dir: str | Path | None = None) -> str:
    """$MLFLOW_TRACKING_URI, else the store of the last Tracker here, else the run dir's store."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if run_dir is None and _current_uri:
        return _current_uri
    return default_tracking_uri(run_dir or "runs")


def _client(uri: str | None = None):
    from mlflow import MlflowClient

    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# ---------------------------------------------------------------- flattening


def flatten(obj, prefix: str = "", sep: str = ".") -> dict:
    """Nested mappings to one level: {"a": {"b": 1}} -> {"a.b": 1}."""
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            out |= flatten(value, f"{prefix}{sep}{key}" if prefix else str(key), sep)
        return out
    return {prefix: obj}


def config_params(config: BaseModel) -> dict[str, str]:
    """A config as MLflow params: dotted keys, JSON values (lists stay readable)."""
    flat = flatten(config.model_dump(mode="json"))
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in flat.items()}


def numeric(metrics: Mapping, sep: str = "/") -> dict[str, float]:
    """The finite numbers of a (nested) metrics dict as MLflow metrics; bools, strings and artifacts
    dropped, names made legal ("maj@8" -> "maj_at_8")."""
    flat = flatten({k: v for k, v in metrics.items() if k != "artifacts"}, sep=sep)
    return {
        metric_name(k): float(v) for k, v in flat.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def metric_name(name: str) -> str:
    """MLflow allows letters, digits, '_', '-', '.', ' ', '/' and ':' in metric names."""
    return re.sub(r"[^\w\-. /:]", "_", name.replace("@", "_at_"))


# ---------------------------------------------------------------- the tracker


class Tracker:
    """Runs of one project's experiment; every call names its run, so threads and tasks can share it."""

    def __init__(self, experiment: str, run_dir: str | Path = "runs", uri: str | None = None):
        global _current_uri
        self.uri = uri or tracking_uri(run_dir)
        _current_uri = self.uri
        self.client = _client(self.uri)
        self.experiment_id = self._experiment(experiment)

    @classmethod
    def for_config(cls, config) -> Tracker:
        return cls(config.name, config.run_dir)

    def _experiment(self, name: str) -> str:
        """The experiment's id, created if new; marked for model training (MLflow 3 otherwise opens
        an untagged experiment on its GenAI overview of traces)."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return found.experiment_id
        root = artifacts_root(self.uri)
        location = (root / name).as_uri() if root else None
        return self.client.create_experiment(name, artifact_location=location,
                                             tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})

    # -- runs

    def start_run(self, name: str, *, key: str, parent: str | None = None, tags: Mapping[str, str] | None = None,
                  reuse_finished: bool = True) -> str:
        """The run with this key if there is one (a resumed or repeated round), else a new one.

        ``reuse_finished=False`` reuses only an unfinished run: a finished evolution run again is a new one.
        """
        for run in self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{_quote(key)}'",
            order_by=["attributes.start_time DESC"],
        ):
            if reuse_finished or run.info.status != "FINISHED":
                self.client.update_run(run.info.run_id, status="RUNNING")
                return run.info.run_id
        all_tags = {KEY_TAG: key, **(tags or {})}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        return self.client.create_run(self.experiment_id, tags=all_tags, run_name=name).info.run_id

    @contextmanager
    def run(self, name: str, *, key: str, parent: str | None = None, tags: Mapping[str, str] | None = None,
            reuse_finished: bool = True) -> Iterator[str]:
        """A run that ends FINISHED, or FAILED on an error; a killed process leaves it RUNNING to resume."""
        run_id = self.start_run(name, key=key, parent=parent, tags=tags, reuse_finished=reuse_finished)
        try:
            yield run_id
        except Exception:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")

    # -- values

    def log_config(self, run_id: str, config: BaseModel, **extra) -> None:
        from mlflow.entities import Param

        params = config_params(config) | {k: str(v) for k, v in extra.items()}
        logged = self.client.get_run(run_id).data.params  # a resumed run has them: MLflow refuses a change
        items = [Param(k, v[:6000]) for k, v in params.items() if k not in logged]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start:start + 100])
        self.log_text(run_id, config.model_dump_json(indent=2), "config.json")

    def log_metrics(self, run_id: str, metrics: Mapping, step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in numeric(metrics).items()]
        for start in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[start:start + 500])

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        elif path.exists():
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_dataset(self, run_id: str, path: str | Path, name: str, context: str) -> None:
        """A JSONL file as an MLflow data set (its scalar columns; nested fields left out)."""
        import mlflow.data
        import pandas as pd
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        from evomath.files import read_jsonl

        rows = [{k: v for k, v in row.items() if isinstance(v, (str, int, float, bool))} for row in read_jsonl(path)]
        with warnings.catch_warnings():  # MLflow registers two identical local-file sources and says so
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(pd.DataFrame(rows), source=str(Path(path).resolve()), name=name)
        entity = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
        self.client.log_inputs(run_id, datasets=[entity])

    def log_figure(self, run_id: str, figure, artifact_file: str) -> None:
        self.client.log_figure(run_id, figure, artifact_file)

    # -- what the stages produce

    def log_stage(self, run_id: str, stage: str, metrics: Mapping) -> None:
        """A stage's metrics, its data files as data sets and artifacts, and its plots. Directories
        (models, per-problem records) stay out: models are registered, records stay in the run dir."""
        self.log_metrics(run_id, metrics)
        for name, path in (metrics.get("artifacts") or {}).items():
            path = Path(path)
            if not path.is_file():
                continue
            if name in ("trees", "trees_final"):
                self._log_trees(run_id, path, name)
            elif name == "curves":
                self.log_curves(run_id, path)
            elif path.suffix == ".png":
                self.log_artifact(run_id, path, "plots")
            else:
                if path.suffix == ".jsonl":
                    self.log_dataset(run_id, path, name, context="evaluation" if stage == "evaluate" else "training")
                self.log_artifact(run_id, path, "data")

    def log_curves(self, run_id: str, path: Path) -> None:
        """A per-step training log (JSONL rows with ``step``) as metric histories, so MLflow draws each
        number as a curve over the steps (the RL stage's gold accuracy beside its reward-model score)."""
        from evomath.files import read_jsonl

        for row in read_jsonl(path):
            self.log_metrics(run_id, {k: v for k, v in row.items() if k != "step"}, step=int(row["step"]))
        self.log_artifact(run_id, path, "data")

    def _log_trees(self, run_id: str, path: Path, name: str) -> None:
        """A few sample trees (whole files get large), a data set of problems, Q-value histogram."""
        from evomath.files import read_jsonl

        rows = list(read_jsonl(path))
        sample = "".join(json.dumps(row) + "\n" for row in rows[:TREE_SAMPLES])
        self.log_text(run_id, sample, f"samples/{name}-sample.jsonl")
        self.log_dataset(run_id, path, name, context="generated")
        self.log_figure(run_id, q_histogram(path), f"plots/q-values-{name}.png")

    def log_rounds(self, run_id: str, rows: Sequence[Mapping], plot: Path) -> None:
        """The evolution's table and its plot (accuracy, bucket counts and minutes by round)."""
        self.log_artifact(run_id, plot, "plots")
        self.log_text(run_id, json.dumps(list(rows), indent=2), "rounds.json")

    # -- registry

    def register_round_models(self, run_id: str, round_k: int, policy_dir: str | Path, ppm_dir: str | Path | None,
                              score: float) -> dict[str, str]:
        """Policy and PPM as model versions aliased ``round-k``; each one's ``champion`` alias moves
        only when ``score`` beats the score of the version it points to (a round without a PPM
        leaves the PPM's champion alone)."""
        versions = {}
        for kind, directory in (("policy", policy_dir), ("ppm", ppm_dir)):
            if directory is None or not Path(directory).is_dir():
                continue
            beats = score > self.champion_score(kind)
            versions[kind] = self._register(run_id, kind, round_k, Path(directory), score)
            if beats:
                self.client.set_registered_model_alias(kind, CHAMPION, versions[kind])
        return versions

    def _register(self, run_id: str, name: str, round_k: int, directory: Path, score: float) -> str:
        """One version per (run, round): a resumed round's registration is not repeated."""
        from mlflow.exceptions import MlflowException

        alias = f"round-{round_k}"
        try:
            existing = self.client.get_model_version_by_alias(name, alias)
            if existing.run_id == run_id:
                return str(existing.version)
        except MlflowException:
            try:
                self.client.create_registered_model(name)
            except MlflowException:
                pass  # exists, with no round-k alias yet
        artifact_path = f"models/{name}"
        self.log_artifact(run_id, directory, artifact_path)
        version = self.client.create_model_version(
            name, source=f"runs:/{run_id}/{artifact_path}", run_id=run_id,
            tags={"round": str(round_k), SCORE_TAG: repr(float(score))},
        ).version
        self.client.set_registered_model_alias(name, alias, version)
        return str(version)

    def champion_score(self, name: str) -> float:
        from mlflow.exceptions import MlflowException

        try:
            champion = self.client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            return -math.inf
        return float(champion.tags.get(SCORE_TAG, "-inf"))

    # -- links

    def ui_base(self) -> str | None:
        return self.uri.rstrip("/") if urlparse(self.uri).scheme in ("http", "https") else None

    def run_url(self, run_id: str) -> str | None:
        base = self.ui_base()
        return f"{base}/#/experiments/{self.experiment_id}/runs/{run_id}" if base else None

    def experiment_url(self) -> str | None:
        base = self.ui_base()
        return f"{base}/#/experiments/{self.experiment_id}/runs?compareRunsMode=CHART" if base else None

    def compare_url(self, run_ids: Sequence[str]) -> str | None:
        base = self.ui_base()
        if not base:
            return None
        runs = quote(json.dumps(list(run_ids)))
        return f"{base}/#/compare-runs?runs={runs}&experiments={quote(json.dumps([self.experiment_id]))}"


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def q_histogram(trees_path: str | Path):
    """Distribution of node Q-values over a round's trees (a Figure, drawn without pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from evomath.tree import read_trees

    values = [n.q for t in read_trees(trees_path) for n in t.nodes if n.parent is not None and n.visits]
    figure = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.hist(values, bins=40, range=(-1, 1))
    ax.set(title=f"Q-values of {len(values)} visited nodes", xlabel="Q", ylabel="nodes")
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------- models by URI


def pin(uri: str) -> str:
    """``models:/name@alias`` as the version it points to now (cache keys must not follow a moving alias)."""
    if not uri.startswith("models:/") or "@" not in uri:
        return uri
    name, alias = uri.removeprefix("models:/").split("@", 1)
    version = _client().get_model_version_by_alias(name, alias).version
    return f"models:/{name}/{version}"


def _artifact_location(pinned: str, store: str) -> str:
    """Where a pinned ``models:/name/version`` keeps its files (``runs:/`` URIs pass through)."""
    if not pinned.startswith("models:/"):
        return pinned
    name, version = pinned.removeprefix("models:/").split("/", 1)
    return _client(store).get_model_version_download_uri(name, version)


def download_model(uri: str) -> Path:
    """A ``models:/`` or ``runs:/`` URI as a local model directory, downloaded once and cached."""
    import mlflow.artifacts

    pinned, store = pin(uri), tracking_uri()
    # Version numbers are per store: the store's hash keeps two stores' "policy/3" apart.
    target = models_dir() / "mlflow" / f"{_slug(pinned)}-{hashlib.sha256(store.encode()).hexdigest()[:10]}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=_artifact_location(pinned, store), dst_path=tmp, tracking_uri=store
        )
        try:
            Path(local).rename(target)
        except OSError:  # another process finished first
            if not target.is_dir():
                raise
    return target


def _slug(uri: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in uri.split(":/", 1)[1].strip("/"))


register_uri_resolver("models:/", download_model)
register_uri_resolver("runs:/", download_model)
