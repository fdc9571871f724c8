"""The builder: the only part of nncli that reads the registries and wires objects together.

  experiment   a config -> data, model, loss, optimizer, schedule, checked against each other
  advice       the located notes and warnings on a config (final activations, input scale)
  paths        where the data files of a config are
  checkpoints  a checkpoint -> its config, model and data again; the data record it keeps
"""

from nncli.builder.checkpoints import (
    Rebuilt,
    checkpoint_config,
    data_change,
    data_record,
    rebuild,
    refuse_changed_data,
)
from nncli.builder.experiment import (
    Experiment,
    build_experiment,
    build_loss,
    build_model,
    build_regularizer,
    check_fit,
    full_batch,
    monitor_of,
    steps_per_epoch,
)
from nncli.builder.paths import resolve_data_paths

__all__ = [
    "Experiment",
    "Rebuilt",
    "build_experiment",
    "build_loss",
    "build_model",
    "build_regularizer",
    "check_fit",
    "checkpoint_config",
    "data_change",
    "data_record",
    "full_batch",
    "monitor_of",
    "rebuild",
    "refuse_changed_data",
    "resolve_data_paths",
    "steps_per_epoch",
]
