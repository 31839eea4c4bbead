"""logger=tensorboard and logger=mlflow: each run's metrics read back with the library's own reader
(TensorBoard's EventAccumulator, MLflow's client), no server and no network."""

from __future__ import annotations

import pytest

from tests.helpers import tiny, train_in_process


def test_tensorboard_event_files_hold_the_losses_and_the_summary(chat_file, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record = train_in_process(tiny(chat_file, "logger=tensorboard"), tmp_path)
    assert record["status"] == "ok", record.get("error")
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train_loss", "val_loss", "summary/train_loss_last", "summary/trainable_params"} <= scalars
    assert [e.value for e in events.Scalars("val_loss")] == pytest.approx(record["val_losses"], rel=1e-6)
    assert len(events.Scalars("train_loss")) == record["optimizer_steps"]
    assert events.Scalars("summary/train_loss_last")[-1].value == pytest.approx(record["train_loss_last"], rel=1e-6)
    assert events.Scalars("summary/trainable_params")[-1].value == record["trainable_params"]
    assert (tmp_path / "logs" / "metrics.csv").is_file()  # the CSV log is kept


def test_mlflow_file_store_holds_params_metrics_and_status(chat_file, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    record = train_in_process(tiny(chat_file, "logger=mlflow", "logger.project=inits"), tmp_path / "run")
    assert record["status"] == "ok", record.get("error")
    client = MlflowClient(tracking_uri=f"sqlite:///{(tmp_path / 'run' / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("inits")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "ok" and run.info.run_name == "run"
    assert run.data.params["adapter.r"] == "8" and run.data.params["model.name"] == "tiny"
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.value for m in history] == pytest.approx(record["val_losses"], rel=1e-6)
    assert run.data.metrics["summary/val_loss_last"] == pytest.approx(record["val_loss_last"], rel=1e-6)
    assert run.data.metrics["summary/optimizer_steps"] == record["optimizer_steps"]


def test_mlflow_run_of_a_failed_run_is_marked_failed(chat_file, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{(tmp_path / 'shared.db').resolve()}"  # one store for several runs
    record = train_in_process(tiny(chat_file, "logger=mlflow", f"logger.tracking_uri={uri}", "fault.kind=crash"), tmp_path / "run")
    assert record["status"] == "failed"
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("harness").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["status"] == "failed"
    assert not (tmp_path / "run" / "mlflow.db").exists()
