"""Configuration loading, overrides, strict type checks, validation and round trips."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from configs import Config, ConfigError, config_to_dict, load_config, parse_cli, validate
from utils.io import save_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
YAMLS = sorted(CONFIGS.glob("*.yaml"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def raises(match_all, fn, *args, **kwargs) -> str:
    """Call ``fn``; it must raise ConfigError whose message contains every string of ``match_all``."""
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    for fragment in [match_all] if isinstance(match_all, str) else match_all:
        assert fragment in message, (fragment, message)
    return message


# ---------------------------------------------------------------------------- files in configs/


def test_defaults_load_and_validate():
    cfg = load_config(None)
    assert cfg == Config()
    validate(cfg)


def test_config_files_exist():
    names = {p.name for p in YAMLS}
    for stem in ("cuhk_pedes", "icfg_pedes", "rstpreid"):
        assert f"{stem}.yaml" in names and f"{stem}_authors_code.yaml" in names


@pytest.mark.parametrize("path", YAMLS, ids=[p.name for p in YAMLS])
def test_every_yaml_loads_and_validates(path):
    cfg = load_config(path)
    validate(cfg)
    assert isinstance(cfg.solver.lr, float)


@pytest.mark.parametrize(
    "stem, dataset, factor, margins, epochs",
    [
        ("cuhk_pedes", "CUHK-PEDES", 10.0, (0.1, 0.1), 60),
        ("icfg_pedes", "ICFG-PEDES", 10.0, (0.2, 1.0), 100),
        ("rstpreid", "RSTPReid", 1.0, (0.2, 0.8), 60),
    ],
)
def test_paper_and_authors_code_values(stem, dataset, factor, margins, epochs):
    paper = load_config(CONFIGS / f"{stem}.yaml")
    code = load_config(CONFIGS / f"{stem}_authors_code.yaml")
    for cfg in (paper, code):  # the common recipe (docs/method.md, "Training recipe")
        assert cfg.data.dataset == dataset
        assert (cfg.data.batch_size, cfg.data.sampler, cfg.data.augment) == (64, "random", True)
        assert (cfg.solver.optimizer, cfg.solver.eps, cfg.solver.weight_decay) == ("Adam", 1e-3, 4e-5)
        assert (cfg.solver.warmup_epochs, cfg.solver.warmup_factor, cfg.solver.scheduler) == (5, 0.1, "cosine")
        assert cfg.loss.names == ["a-sdm", "mlm", "id", "efa"] and cfg.loss.weights == {}
        assert (cfg.train.eval_period, cfg.eval.split, cfg.train.precision) == (1, "test", "pure_fp16")
        assert (cfg.efa.lse_lambda, cfg.efa.threshold) == (1.0, 1.0)
    assert (paper.asdm.mode, paper.asdm.factor) == ("probability", factor)
    assert (paper.efa.text_margin, paper.efa.image_margin) == margins
    assert (paper.solver.lr, paper.solver.epochs) == (1e-5, epochs)
    assert (code.asdm.mode, code.asdm.factor) == ("cosine", 0.1)
    assert (code.efa.text_margin, code.efa.image_margin) == (0.1, 0.9)
    assert (code.solver.lr, code.solver.epochs) == (5e-6, 60)
    assert paper.train.name != code.train.name


# docs/pretraining.md, "Pretraining recipe": (bias lr factor, bias weight decay) per recipe.
@pytest.mark.parametrize("stem, bias", [("pretrain_ham", (2.0, 0.0)), ("pretrain_mllm4text_reid", (1.0, -1.0))])
def test_a_pretraining_recipe_holds_its_papers_values(stem, bias):
    cfg = load_config(CONFIGS / f"{stem}.yaml")
    assert cfg.loss.names == ["sdm"]  # no identities in the corpora: no ID loss; the papers' SDM
    assert (cfg.data.batch_size, cfg.data.augment, cfg.data.text_length) == (512, True, 77)
    assert cfg.model.image_size == [384, 128]
    assert (cfg.solver.optimizer, cfg.solver.lr, cfg.solver.scheduler) == ("Adam", 1e-5, "cosine")
    assert cfg.solver.epochs == 30
    assert (cfg.solver.warmup_epochs, cfg.solver.warmup_factor, cfg.solver.warmup_method) == (5, 0.1, "linear")
    assert (cfg.solver.bias_lr_factor, cfg.solver.bias_weight_decay) == bias
    assert cfg.data.shards and cfg.data.dataset == "CUHK-PEDES"  # trains on shards, evaluates zero-shot
    assert (cfg.eval.split, cfg.eval.cross_domain, cfg.train.eval_period) == ("test", ["ICFG-PEDES", "RSTPReid"], 1)


# ---------------------------------------------------------------------------- overrides


@pytest.mark.parametrize(
    "override, getter, expected",
    [
        ("solver.lr=1e-5", lambda c: c.solver.lr, 1e-5),
        ("solver.lr=2", lambda c: c.solver.lr, 2.0),  # int accepted for float
        ("solver.epochs=3", lambda c: c.solver.epochs, 3),
        ("data.dataset=RSTPReid", lambda c: c.data.dataset, "RSTPReid"),
        ("train.name=2024", lambda c: c.train.name, "2024"),  # a str key keeps the text
        ("train.output_dir=", lambda c: c.train.output_dir, ""),
        ("data.augment=false", lambda c: c.data.augment, False),
        ("model.image_size=[256,128]", lambda c: c.model.image_size, [256, 128]),
        ("solver.betas=[0.9, 0.98]", lambda c: c.solver.betas, [0.9, 0.98]),
        ("eval.cross_domain=[ICFG-PEDES,RSTPReid]", lambda c: c.eval.cross_domain, ["ICFG-PEDES", "RSTPReid"]),
        ("eval.cross_domain=[]", lambda c: c.eval.cross_domain, []),
        ("loss.weights.efa=0.5", lambda c: c.loss.weights, {"efa": 0.5}),
        ("loss.weights={id: 2, mlm: 0.5}", lambda c: c.loss.weights, {"id": 2.0, "mlm": 0.5}),
        ("solver={lr: 1e-4, epochs: 10}", lambda c: (c.solver.lr, c.solver.epochs), (1e-4, 10)),
    ],
)
def test_override_types(override, getter, expected):
    cfg = load_config(None, [override], check=False)  # types only; ranges are validate's
    value = getter(cfg)
    assert value == expected and type(value) is type(expected)
    if isinstance(value, list) and value:
        assert type(value[0]) is type(expected[0])


def test_overrides_apply_after_file_in_order():
    cfg = load_config(
        CONFIGS / "cuhk_pedes.yaml", ["solver.lr=3e-6", "loss.weights.efa=0.5", "loss.weights.id=2", "solver.lr=4e-6"]
    )
    assert cfg.solver.lr == 4e-6 and cfg.loss.weights == {"efa": 0.5, "id": 2.0}
    assert cfg.data.dataset == "CUHK-PEDES"


def test_yaml_floats_and_defaults_untouched(tmp_path):
    cfg = load_config(write(tmp_path / "a.yaml", "solver:\n  lr: 1e-5\n  weight_decay: 4E-5\n"))
    assert cfg.solver.lr == 1e-5 and cfg.solver.weight_decay == 4e-5
    assert cfg.model == Config().model
    assert Config().loss.weights == {}  # no shared mutable state
    load_config(None, ["loss.weights.efa=0.5"])
    assert Config().loss.weights == {}
    assert load_config(write(tmp_path / "empty.yaml", "# nothing\n")) == Config()


# ---------------------------------------------------------------------------- base chains


def test_base_chain(tmp_path):
    write(tmp_path / "root.yaml", "solver: {lr: 1e-4, epochs: 10}\ndata: {batch_size: 8}\n")
    write(tmp_path / "sub" / "mid.yaml", "base: ../root.yaml\nsolver: {epochs: 20}\nloss: {weights: {id: 2}}\n")
    leaf = write(tmp_path / "sub" / "leaf.yaml", "base: mid.yaml\ndata: {batch_size: 16}\n")
    cfg = load_config(leaf)
    assert (cfg.solver.lr, cfg.solver.epochs, cfg.data.batch_size) == (1e-4, 20, 16)
    assert cfg.loss.weights == {"id": 2.0}


def test_base_cycle(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    raises(["cycle", "a.yaml", "b.yaml"], load_config, tmp_path / "a.yaml")
    raises("cycle", load_config, write(tmp_path / "self.yaml", "base: self.yaml\n"))


def test_base_errors(tmp_path):
    raises(["missing.yaml", "not found"], load_config, write(tmp_path / "a.yaml", "base: missing.yaml\n"))
    raises(["'base'", "b.yaml"], load_config, write(tmp_path / "b.yaml", "base: [x.yaml]\n"))


# ---------------------------------------------------------------------------- load errors


def test_unknown_section_and_key(tmp_path):
    msg = raises(["solvr", "'solver'", "model, loss"], load_config, write(tmp_path / "a.yaml", "solvr: {lr: 1}\n"))
    assert "a.yaml" in msg
    msg = raises(
        ["solver.lrr", "'solver.lr'", "warmup_epochs", "b.yaml"],
        load_config,
        write(tmp_path / "b.yaml", "solver: {lrr: 1}\n"),
    )
    raises(["model.zzz", "valid keys of model", "image_size"], load_config, None, ["model.zzz=1"])
    raises(["solvr", "override"], load_config, None, ["solvr.lr=1"])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("solver.epochs=true", "int"),  # bool is not an int
        ("solver.lr=true", "float"),  # nor a float
        ("solver.epochs=1.5", "int"),
        ("solver.lr=abc", "float"),
        ("data.augment=1", "bool"),
        ("data.dataset=[a]", "str"),
        ("model.image_size=384", "list of int"),
        ("model.image_size=[384, 1.5]", "list of int"),
        ("eval.cross_domain=ICFG-PEDES", "list of str"),  # a string is not a list
        ("eval.cross_domain=[1, 2]", "list of str"),
        ("loss.weights={efa: high}", "mapping of str to float"),
        ("loss.weights={1: 0.5}", "mapping of str to float"),
        ("loss.weights=[efa]", "mapping of str to float"),
        ("loss.weights.efa=high", "float"),
        ("solver=3", "mapping"),
    ],
)
def test_wrong_types(override, expected):
    key = override.split("=")[0]
    raises([key, expected, override], load_config, None, [override])


def test_wrong_type_in_file_names_file(tmp_path):
    raises(
        ["data.batch_size", "int", "'64'", "a.yaml"],
        load_config,
        write(tmp_path / "a.yaml", "data:\n  batch_size: '64'\n"),
    )
    raises(["data", "mapping", "b.yaml"], load_config, write(tmp_path / "b.yaml", "data: 5\n"))


def test_file_errors(tmp_path):
    raises(["nope.yaml", "not found"], load_config, tmp_path / "nope.yaml")
    msg = raises(
        ["bad.yaml", "line 3, column 12"],
        load_config,
        write(tmp_path / "bad.yaml", "solver:\n  lr: 1\n  epochs: 2: 3\n"),
    )
    raises(["list.yaml", "mapping"], load_config, write(tmp_path / "list.yaml", "- a\n- b\n"))
    raises(["scalar.yaml", "mapping"], load_config, write(tmp_path / "scalar.yaml", "hello\n"))
    assert "YAML" in msg


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("solver.lr", "solver.lr"),
        ("=1", "=1"),
        ("solver.lr.x=1", "solver.lr.x"),
        ("loss.weights.a.b=1", "loss.weights.a.b"),
        ("solver.lr=[1", "solver.lr=[1"),
    ],
)
def test_override_errors(override, fragment):
    raises([fragment, "override"], load_config, None, [override])


def test_overrides_must_be_a_sequence():
    raises("overrides", load_config, None, "solver.lr=1")


# ---------------------------------------------------------------------------- validate


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["data.batch_size=0"], "data.batch_size"),
        (["solver.lr=0"], "solver.lr"),
        (["solver.lr=-1e-5"], "solver.lr"),
        (["solver.epochs=0"], "solver.epochs"),
        (["solver.warmup_epochs=-1"], "solver.warmup_epochs"),
        (["solver.epochs=5", "solver.warmup_epochs=5"], "solver.warmup_epochs"),
        (["solver.weight_decay=-1"], "solver.weight_decay"),
        (["model.image_size=[384]"], "model.image_size"),
        (["model.image_size=[384, 0]"], "model.image_size"),
        (["model.image_size=[384, 120]"], "model.image_size"),
        (["data.text_length=0"], "data.text_length"),
        (["data.text_length=78"], "data.text_length"),
        (["train.precision=fp16"], "train.precision"),
        (["data.sampler=balanced"], "data.sampler"),
        (["data.sampler=identity", "data.batch_size=30", "data.num_instance=4"], "data.batch_size"),
        (["solver.optimizer=adam"], "solver.optimizer"),
        (["solver.scheduler=onecycle"], "solver.scheduler"),
        (["solver.warmup_method=exp"], "solver.warmup_method"),
        (["solver.milestones=[50, 20]"], "solver.milestones"),
        (["asdm.mode=prob"], "asdm.mode"),
        (["eval.split=dev"], "eval.split"),
        (["data.train_split=all"], "data.train_split"),
        (["data.dataset=CUHK/PEDES"], "data.dataset"),
        (["eval.cross_domain=[ICFG-PEDES, ../Market]"], "eval.cross_domain"),
        (["data.dataset=ICFG-PEDES", "eval.split=val"], "eval.split"),
        (["loss.names=sdm+foo"], "loss.names"),
        (["loss.names="], "loss.names"),
        (["loss.names=sdm+sdm"], "loss.names"),
        (["loss.names=a-sdm+id", "loss.weights.efa=0.5"], "loss.weights"),
        (["efa.text_margin=-0.1"], "efa.text_margin"),
        (["efa.image_margin=-0.1"], "efa.image_margin"),
        (["efa.threshold=-1"], "efa.threshold"),
        (["train.log_period=0"], "train.log_period"),
        (["train.eval_period=0"], "train.eval_period"),
        (["data.num_workers=-1"], "data.num_workers"),
        (["eval.batch_size=0"], "eval.batch_size"),
        (["eval.query_chunk=0"], "eval.query_chunk"),
        (["model.text_width=96"], "model.text_width"),
        (["model.embed_dim=32"], "model.embed_dim"),
        (["train.precision=pure_fp16", "solver.eps=1e-8"], "solver.eps"),
    ],
)
def test_validate_catches(overrides, key):
    cfg = load_config(None, overrides, check=False)
    raises(key, validate, cfg)
    raises(key, load_config, None, overrides)  # load_config returns only validated configs


# Each check the code that builds from a config once made again is made once, at load:
# (overrides, the line of the ConfigError that names the key, the value and what is allowed).
CHECKED_AT_LOAD = {
    "optimizer": (["solver.optimizer=Lion"], "solver.optimizer='Lion': must be one of Adam, AdamW, SGD"),
    "optimizer case": (["solver.optimizer=adam"], "solver.optimizer='adam': must be one of Adam, AdamW, SGD"),
    "lr": (["solver.lr=0"], "solver.lr=0.0: must be > 0"),
    "scheduler": (
        ["solver.scheduler=onecycle"],
        "solver.scheduler='onecycle': must be one of cosine, step, linear, exponential, poly",
    ),
    "warmup method": (["solver.warmup_method=exp"], "solver.warmup_method='exp': must be one of linear, constant"),
    "warmup epochs": (["solver.warmup_epochs=-1"], "solver.warmup_epochs=-1: must be in 0..solver.epochs-1"),
    "milestones": (
        ["solver.scheduler=step", "solver.milestones=[50, 20]"],
        "solver.milestones=[50, 20]: must be increasing epochs",
    ),
    "precision": (
        ["train.precision=fp16"],
        "train.precision='fp16': must be one of fp32, amp_bf16, amp_fp16, pure_fp16",
    ),
    "sampler": (["data.sampler=balanced"], "data.sampler='balanced': must be one of random, identity"),
    "sampler with shards": (
        ["data.shards=data/shards/x", "data.sampler=identity"],
        "data.sampler='identity': must be random with data.shards (the shards stream in order; identity needs "
        "random access)",
    ),
    "shard split": (["data.shard_split=ranks"], "data.shard_split='ranks': must be one of batches, blocks"),
    "IRR depth": (["loss.names=sdm+mlm", "model.cmt_depth=0"], "model.cmt_depth=0: must be >= 1"),
    "A-SDM mode": (["asdm.mode=softmax"], "asdm.mode='softmax': must be one of cosine, probability"),
    "loss names": (
        ["loss.names=a-sdm+triplet"],
        "loss.names='a-sdm+triplet': must be a '+'-joined subset of itc, sdm, a-sdm, cmpm, efa, id, mlm "
        "(unknown: triplet)",
    ),
    "loss weights": (
        ["loss.names=sdm", "loss.weights.efa=2.0"],
        "loss.weights={'efa': 2.0}: must be keyed by enabled losses (sdm); not enabled: efa",
    ),
}


@pytest.mark.parametrize("check", list(CHECKED_AT_LOAD))
def test_each_value_check_is_made_at_load_with_its_message(check):
    overrides, line = CHECKED_AT_LOAD[check]
    message = raises(line, load_config, None, overrides)
    assert message.splitlines()[1].strip().startswith(line), message  # the one problem, named whole


def test_validate_choice_lists_allowed_values():
    raises(
        ["train.precision", "fp32", "amp_bf16", "amp_fp16", "pure_fp16"], load_config, None, ["train.precision=half"]
    )
    raises(["model.image_size", "model.patch_size=16"], load_config, None, ["model.image_size=[100,128]"])


def test_validate_collects_every_problem():
    cfg = load_config(None, ["data.batch_size=0", "solver.lr=0", "train.precision=x", "asdm.mode=y"], check=False)
    msg = raises(["data.batch_size", "solver.lr", "train.precision", "asdm.mode", "4 problems"], validate, cfg)
    assert msg.count("\n") == 4


def test_validate_accepts_edge_values():
    validate(
        load_config(
            None,
            [
                "data.sampler=identity",
                "data.batch_size=8",
                "data.num_instance=4",
                "solver.warmup_epochs=0",
                "solver.epochs=1",
                "data.text_length=1",
                "loss.names=sdm+id",
                "loss.weights.id=0.5",
                "data.num_workers=0",
                "eval.cross_domain=[ICFG-PEDES, RSTPReid, Synthetic-PEDES]",
                "model.image_size=[64,32]",
            ],
        )
    )


# ---------------------------------------------------------------------------- save / load


def test_save_load_round_trip(tmp_path):
    cfg = load_config(
        CONFIGS / "rstpreid.yaml",
        ["loss.weights.efa=0.5", "eval.cross_domain=[ICFG-PEDES]", "model.image_size=[256,128]", "train.name=2024"],
    )
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temporary left
    text = path.read_text()
    assert text.index("model:") < text.index("loss:") < text.index("eval:")  # schema order
    save_config(Config(), path)  # overwrite
    assert load_config(path) == Config()
    assert config_to_dict(cfg)["loss"]["weights"] == {"efa": 0.5}
    assert set(config_to_dict(cfg)) == {f.name for f in dataclasses.fields(Config)}


# ---------------------------------------------------------------------------- command line


def test_parse_cli(tmp_path):
    cfg = parse_cli(["--config", str(CONFIGS / "icfg_pedes.yaml"), "solver.lr=2e-5", "data.batch_size=32"])
    assert (cfg.data.dataset, cfg.solver.lr, cfg.data.batch_size, cfg.solver.epochs) == ("ICFG-PEDES", 2e-5, 32, 100)
    assert parse_cli([]) == Config()


def test_parse_cli_errors_and_help(capsys):
    with pytest.raises(SystemExit) as info:
        parse_cli(["--help"])
    assert info.value.code == 0 and "--config" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        parse_cli(["solver.lrr=1"])
    assert info.value.code == 2 and "solver.lrr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_cli(["solver.lr=0"])  # validated
    assert "solver.lr" in capsys.readouterr().err
    assert parse_cli(["solver.lr=0"], check=False).solver.lr == 0.0


@pytest.mark.parametrize(
    "name",
    [
        "cuhk_pedes",
        "icfg_pedes",
        "rstpreid",
        "cuhk_pedes_authors_code",
        "icfg_pedes_authors_code",
        "rstpreid_authors_code",
    ],
)
def test_paper_and_authors_configs_train_as_the_published_numbers_were(name):
    """Both families keep the authors' data behaviours (docs/method.md, "Paper versus code")."""
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.data.share_masked_caption is True and cfg.model.id_classes == "captions"
