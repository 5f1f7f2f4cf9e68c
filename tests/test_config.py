import pytest

from repkernel import config as configuration
from repkernel.config import ConfigError, build, validate


def test_defaults_are_the_published_main_setup():
    setup = build({"curriculum": {"n": 50, "steps": 3}, "probes": {"n": 20}})
    assert setup.network.config["hidden"] == 200
    assert setup.network.config["init_scale"] == 0.1
    stage = setup.curriculum.stages[0]
    assert (stage.lr, stage.reduction, stage.batch) == (0.03, "sum", "full")
    assert setup.environment.n_cues == 12 and len(setup.probes) == 20


def test_every_problem_reported_at_once_with_location():
    raw = {"network": {"hiddn": 3, "init_scale": -1.0}, "curriculum": {"lr": "fast"},
           "extra": {}}
    with pytest.raises(ConfigError) as info:
        validate(raw)
    problems = info.value.problems
    assert len(problems) == 4
    assert any("[network].hiddn" in p and "did you mean 'hidden'" in p for p in problems)
    assert any("[network].init_scale" in p for p in problems)
    assert any("[curriculum].lr" in p for p in problems)
    assert any("[extra]" in p for p in problems)


def test_presets_build_their_stages():
    concurrent = build({"curriculum": {"preset": "single_then_concurrent", "n": 30,
                                       "steps": [5, 6], "lr": [0.03, 0.01]}})
    assert [s.steps for s in concurrent.curriculum.stages] == [5, 6]
    assert set(concurrent.curriculum.stages[1].patterns.labels["k"]) == {1, 2, 3}
    blocked = build({"environment": {"input_dims": 2, "output_dims": 2, "features": 2},
                     "curriculum": {"preset": "blocked", "n": 10, "steps": 7}})
    stages = blocked.curriculum.stages
    assert len(stages) == 4  # one per task, the totals of an interleaved run kept exactly
    assert [s.steps for s in stages] == [2, 2, 2, 1]
    assert [len(s.patterns) for s in stages] == [3, 3, 2, 2]
    assert [set(s.patterns.labels["task"]) for s in stages] == [{0}, {1}, {2}, {3}]
    with pytest.raises(ConfigError, match="at least 4"):
        build({"environment": {"input_dims": 2, "output_dims": 2, "features": 2},
               "curriculum": {"preset": "blocked", "n": 10, "steps": 3}})
    with pytest.raises(ConfigError, match="2 entries"):
        build({"curriculum": {"preset": "single_then_concurrent", "steps": [1, 2, 3]}})


def test_published_test_cases_from_config():
    step = build({"environment": {"kind": "step_function"},
                  "network": {"kind": "mlp", "sizes": [1, 100, 1], "activation": "relu",
                              "bias": True, "init_scale": 1.0},
                  "curriculum": {"preset": "dataset", "lr": 0.03, "steps": 10,
                                 "reduction": "mean"},
                  "probes": {"source": "test"}})
    assert len(step.probes) == 1000 and len(step.curriculum.stages[0].patterns) == 6
    with pytest.raises(ConfigError, match="does not fit"):
        build({"environment": {"kind": "step_function"}})


def test_toml_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[network\nhidden = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        configuration.load_toml(bad)
    with pytest.raises(FileNotFoundError):
        configuration.load_toml(tmp_path / "missing.toml")
