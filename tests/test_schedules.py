import math
import pickle

import pytest

from nncli.errors import CheckpointError, ConfigError
from nncli.nn.optim import SCHEDULES

BASE, EPOCHS = 0.5, 10

# name -> (constructor arguments, [(t, lr expected at t with BASE and EPOCHS)])
FORMULAS = {
    "constant": ({}, [(0.0, 0.5), (3.7, 0.5), (10.0, 0.5)]),
    "step": (
        {"step_size": 2, "gamma": 0.5},
        [(0.0, 0.5), (1.99, 0.5), (2.0, 0.25), (5.5, 0.125), (9.9, 0.5 * 0.5**4)],
    ),
    "multistep": (
        {"milestones": [2, 5.5], "gamma": 0.1},
        [(0.0, 0.5), (1.9, 0.5), (2.0, 0.05), (5.49, 0.05), (5.5, 0.005), (9.0, 0.005)],
    ),
    "exponential": ({"gamma": 0.5}, [(0.0, 0.5), (1.0, 0.25), (2.5, 0.5 * 0.5**2.5)]),
    "cosine": (
        {"min_lr": 0.1},
        [
            (0.0, 0.5),
            (5.0, 0.3),
            (2.5, 0.1 + 0.2 * (1 + math.cos(math.pi / 4))),
            (10.0, 0.1),
            (12.0, 0.1),
        ],
    ),
    "plateau": ({}, [(0.0, 0.5), (7.0, 0.5)]),
}

# Warmup of 2 epochs from 0.1 * base, then the formula at t - 2 over the remaining 8 epochs.
WARMUP = {"warmup_epochs": 2, "warmup_start": 0.1}
WARMUP_FORMULAS = {
    "constant": ({}, [(0.0, 0.05), (1.0, 0.5 * (0.1 + 0.9 * 0.5)), (2.0, 0.5), (9.0, 0.5)]),
    "step": (
        {"step_size": 2, "gamma": 0.5},
        [(0.5, 0.5 * (0.1 + 0.9 * 0.25)), (3.9, 0.5), (4.0, 0.25)],
    ),
    "multistep": (
        {"milestones": [2], "gamma": 0.1},
        [(1.5, 0.5 * (0.1 + 0.9 * 0.75)), (3.9, 0.5), (4.0, 0.05)],
    ),
    "exponential": ({"gamma": 0.5}, [(0.0, 0.05), (3.0, 0.25)]),
    "cosine": (
        {"min_lr": 0.1},
        [(1.0, 0.5 * (0.1 + 0.9 * 0.5)), (2.0, 0.5), (6.0, 0.3), (10.0, 0.1)],
    ),
    "plateau": ({}, [(0.0, 0.05), (2.0, 0.5)]),
}


def make(name, **kwargs):
    schedule = SCHEDULES.get(name)(**kwargs)
    schedule.setup(BASE, EPOCHS)
    return schedule


def test_every_registered_schedule_has_cases():
    assert set(FORMULAS) == set(WARMUP_FORMULAS) == set(SCHEDULES.names())


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_lr_follows_the_formula(name):
    kwargs, points = FORMULAS[name]
    schedule = make(name, **kwargs)
    for t, expected in points:
        assert schedule.lr_at(t) == pytest.approx(expected, rel=1e-12), t


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_warmup_ramps_linearly_then_hands_over(name):
    kwargs, points = WARMUP_FORMULAS[name]
    schedule = make(name, **kwargs, **WARMUP)
    for t, expected in points:
        assert schedule.lr_at(t) == pytest.approx(expected, rel=1e-12), t


def observe_losses(schedule, losses):
    lrs = []
    for loss in losses:
        schedule.observe({"val_loss": loss, "train_loss": 0.0})
        lrs.append(schedule.lr_at(5.0))
    return lrs


def test_plateau_reduces_after_patience_epochs_without_improvement():
    schedule = make("plateau", factor=0.5, patience=2)
    lrs = observe_losses(schedule, [1.0, 0.9, 0.9, 0.9, 0.8, 0.85, 0.85])
    assert lrs == pytest.approx([0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125])


def test_plateau_threshold_is_relative_to_the_best():
    schedule = make("plateau", factor=0.5, patience=1, threshold=0.1)
    # 0.95 is not 10% below 1.0; 0.85 is.
    assert observe_losses(schedule, [1.0, 0.85, 0.95 * 0.85]) == pytest.approx([0.5, 0.5, 0.25])


def test_plateau_in_max_mode_waits_for_an_increase():
    schedule = make("plateau", monitor="val_acc", mode="max", factor=0.5, patience=1)
    lrs = []
    for acc in [0.5, 0.6, 0.6, 0.7]:
        schedule.observe({"val_acc": acc})
        lrs.append(schedule.lr_at(5.0))
    assert lrs == pytest.approx([0.5, 0.5, 0.25, 0.25])


def test_plateau_cooldown_ignores_the_epochs_after_a_reduction():
    without = observe_losses(make("plateau", factor=0.5, patience=1), [1.0] * 5)
    assert without == pytest.approx([0.5, 0.25, 0.125, 0.0625, 0.03125])
    with_cooldown = observe_losses(make("plateau", factor=0.5, patience=1, cooldown=1), [1.0] * 5)
    assert with_cooldown == pytest.approx([0.5, 0.25, 0.25, 0.125, 0.125])


def test_plateau_stops_at_min_lr():
    schedule = make("plateau", factor=0.1, patience=1, min_lr=0.01)
    assert observe_losses(schedule, [1.0] * 5) == pytest.approx([0.5, 0.05, 0.01, 0.01, 0.01])
    assert schedule.reductions == 2


def test_plateau_names_the_missing_metric_and_the_available_ones():
    schedule = make("plateau", monitor="val_los")
    with pytest.raises(ConfigError) as err:
        schedule.observe({"val_loss": 1.0, "train_loss": 1.0})
    assert err.value.key == "monitor"
    assert '"val_los"' in err.value.message
    assert "available: train_loss, val_loss" in err.value.message


def test_observe_is_a_no_op_for_other_schedules():
    schedule = make("step", step_size=2, gamma=0.5)
    schedule.observe({"val_loss": 1.0})
    schedule.observe({})
    assert schedule.lr_at(2.0) == 0.25


@pytest.mark.parametrize("split", [3, 4])  # in a run of bad epochs; just after a reduction
def test_plateau_state_round_trip_continues_identically(split):
    losses = [1.0, 0.9, 0.95, 0.95, 0.97, 0.97, 0.8, 0.99, 0.99, 0.99]
    kwargs = {"factor": 0.5, "patience": 2, "cooldown": 1, "warmup_epochs": 1}
    straight = observe_losses(make("plateau", **kwargs), losses)

    first = make("plateau", **kwargs)
    resumed = observe_losses(first, losses[:split])
    second = SCHEDULES.get("plateau")(**kwargs)  # no setup: the state carries base_lr and epochs
    second.load_state_dict(pickle.loads(pickle.dumps(first.state_dict())))
    resumed += observe_losses(second, losses[split:])
    assert resumed == straight
    assert len(set(straight)) > 2  # the sequence does reduce, twice


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_state_dict_restores_every_schedule(name):
    kwargs, points = FORMULAS[name]
    saved = make(name, **kwargs, **WARMUP).state_dict()
    assert saved["base_lr"] == BASE
    assert saved["total_epochs"] == EPOCHS
    fresh = SCHEDULES.get(name)(**kwargs, **WARMUP)
    fresh.load_state_dict(pickle.loads(pickle.dumps(saved)))
    reference = make(name, **kwargs, **WARMUP)
    for t in [0.0, 1.0, 2.5, 6.0, 10.0]:
        assert fresh.lr_at(t) == reference.lr_at(t)


def test_loading_another_schedules_state_is_a_checkpoint_error():
    with pytest.raises(CheckpointError, match='"cosine"'):
        SCHEDULES.get("constant")().load_state_dict(make("cosine").state_dict())


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_get_config_rebuilds_an_equal_schedule(name):
    kwargs = {**FORMULAS[name][0], **WARMUP}
    schedule = make(name, **kwargs)
    config = schedule.get_config()
    assert config == {**config, **kwargs}
    rebuilt = type(schedule)(**config)
    assert rebuilt.get_config() == config
    rebuilt.setup(BASE, EPOCHS)
    assert [rebuilt.lr_at(t) for t in (0.5, 3.0, 8.0)] == [
        schedule.lr_at(t) for t in (0.5, 3.0, 8.0)
    ]


@pytest.mark.parametrize(
    ("name", "kwargs", "key"),
    [
        ("constant", {"warmup_epochs": -1}, "warmup_epochs"),
        ("constant", {"warmup_start": 1.0}, "warmup_start"),
        ("step", {"step_size": 0}, "step_size"),
        ("step", {"gamma": 0.0}, "gamma"),
        ("step", {"gamma": 1.5}, "gamma"),
        ("multistep", {"milestones": []}, "milestones"),
        ("multistep", {"milestones": 3}, "milestones"),
        ("multistep", {"milestones": [0, 2]}, "milestones[0]"),
        ("multistep", {"milestones": [2, 5, 5]}, "milestones[2]"),
        ("exponential", {"gamma": -0.5}, "gamma"),
        ("cosine", {"min_lr": -0.1}, "min_lr"),
        ("plateau", {"mode": "mni"}, "mode"),
        ("plateau", {"monitor": ""}, "monitor"),
        ("plateau", {"factor": 1.0}, "factor"),
        ("plateau", {"patience": 0}, "patience"),
        ("plateau", {"threshold": -1e-4}, "threshold"),
        ("plateau", {"cooldown": 1.5}, "cooldown"),
    ],
)
def test_bad_arguments_are_config_errors_keyed_by_name(name, kwargs, key):
    with pytest.raises(ConfigError) as err:
        SCHEDULES.get(name)(**kwargs)
    assert err.value.key == key


def test_warmup_longer_than_training_is_a_config_error():
    schedule = SCHEDULES.get("cosine")(warmup_epochs=10)
    with pytest.raises(ConfigError) as err:
        schedule.setup(BASE, EPOCHS)
    assert err.value.key == "warmup_epochs"


def test_cosine_floor_above_the_lr_is_a_config_error():
    schedule = SCHEDULES.get("cosine")(min_lr=1.0)
    with pytest.raises(ConfigError) as err:
        schedule.setup(BASE, EPOCHS)
    assert err.value.key == "min_lr"


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_warmup_steps_take_the_ramp_at_their_end(name):
    # 4 steps an epoch, 2 warmup epochs from 0: step k of the 8 warmup steps trains at (k+1)/8
    # of the base lr, so the first step is not wasted at lr 0 and the last one reaches the base
    schedule = SCHEDULES.get(name)(**FORMULAS[name][0], warmup_epochs=2)
    schedule.setup(BASE, EPOCHS, steps_per_epoch=4)
    lrs = [schedule.lr_at(step / 4) for step in range(8)]
    assert lrs == pytest.approx([BASE * (k + 1) / 8 for k in range(8)], rel=1e-12)
