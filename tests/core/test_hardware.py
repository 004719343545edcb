"""Hardware target configs: every shipped file loads; schema errors name the file and field."""
from __future__ import annotations

import copy
import math

import pytest
import yaml

from spike.hardware import HardwareConfigError, HardwareTarget, load_target, target_names

SHIPPED = ("loihi1", "loihi2", "truenorth", "cmos45nm_fp32", "cmos45nm_int8", "generic")


def test_shipped_targets_listed_and_load():
    assert set(SHIPPED) <= set(target_names())
    for name in target_names():
        t = load_target(name)
        assert isinstance(t, HardwareTarget) and t.name == name
        for path, fig in t.figures().items():
            assert fig.source and fig.kind in ("measured", "published", "estimated"), path
            assert fig.si >= 0 and math.isfinite(fig.si)


def test_shipped_figures():
    l1 = load_target("loihi1")
    assert l1.has_cores and l1.core.neurons.value == 1024
    assert l1.core.syn_mem_bits.value == 128 * 1024 * 8
    assert l1.chip.cores_per_chip.value == 128
    assert l1.energy.syn_op.si == pytest.approx(23.6e-12)
    assert l1.energy.neuron_update_active.value == 81 and l1.energy.neuron_update_idle.value == 52
    assert l1.timing.time_per_step.si == pytest.approx(1e-5)
    # Loihi 2 publishes no per-op energy: every energy figure is marked as an estimate
    l2 = load_target("loihi2")
    assert all(f.kind == "estimated" for k, f in l2.figures().items() if k.startswith("energy."))
    cmos = load_target("cmos45nm_fp32")
    assert not cmos.has_cores and cmos.core is None and cmos.chip is None
    assert cmos.energy.mac.si == pytest.approx(4.6e-12) and cmos.energy.syn_op.si == pytest.approx(0.9e-12)
    g = load_target("generic")
    assert g.figures() == {} and not g.has_cores
    assert load_target(l1) is l1


def _write(tmp_path, data, name="loihi1.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.fixture
def loihi_data():
    from importlib import resources

    return yaml.safe_load(resources.files("spike.hw_configs").joinpath("loihi1.yaml").read_text())


def test_path_round_trip(tmp_path, loihi_data):
    t = load_target(_write(tmp_path, loihi_data))
    assert t.figures().keys() == load_target("loihi1").figures().keys()
    assert load_target(str(tmp_path / "loihi1.yaml")).name == "loihi1"


@pytest.mark.parametrize(
    "edit, field, expect",
    [
        (lambda d: d["energy"]["syn_op"].__setitem__("value", -1), "energy.syn_op.value",
         "expected a non-negative number, got -1"),
        (lambda d: d["energy"]["syn_op"].__setitem__("value", "lots"), "energy.syn_op.value", "non-negative number"),
        (lambda d: d["energy"]["syn_op"].__setitem__("value", True), "energy.syn_op.value", "non-negative number"),
        (lambda d: d["core"]["neurons"].__setitem__("value", 10.5), "core.neurons.value", "positive integer"),
        (lambda d: d["core"].pop("fan_in_axons"), "core.fan_in_axons", "missing"),
        (lambda d: d["energy"]["hop"].pop("value"), "energy.hop.value", "missing"),
        (lambda d: d["energy"]["hop"].pop("source"), "energy.hop.source", "missing"),
        (lambda d: d["energy"]["hop"].pop("kind"), "energy.hop.kind", "missing"),
        (lambda d: d["energy"]["hop"].__setitem__("kind", "guess"), "energy.hop.kind", "measured, published, estimated"),
        (lambda d: d["energy"]["hop"].__setitem__("source", " "), "energy.hop.source", "non-empty"),
        (lambda d: d["energy"]["syn_op"].__setitem__("unit", "W"), "energy.syn_op.unit", "got 'W'"),
        (lambda d: d["timing"]["time_per_step"].__setitem__("unit", "pJ"), "timing.time_per_step.unit", "s, ms"),
        (lambda d: d["energy"].__setitem__("flux", {"value": 1}), "energy.flux", "unknown key"),
        (lambda d: d["energy"]["syn_op"].__setitem__("extra", 1), "energy.syn_op.extra", "unknown key"),
        (lambda d: d.__setitem__("colour", "blue"), "colour", "unknown key"),
        (lambda d: d.pop("chip"), "chip", "needs both core and chip"),
        (lambda d: d["chip"]["mesh_rows"].__setitem__("value", 3), "chip.cores_per_chip", "= 96"),
        (lambda d: d.pop("name"), "name", "non-empty string"),
        (lambda d: d.__setitem__("schema_version", 2), "schema_version", "expected 1"),
    ],
)
def test_schema_errors_name_file_and_field(tmp_path, loihi_data, edit, field, expect):
    data = copy.deepcopy(loihi_data)
    edit(data)
    with pytest.raises(HardwareConfigError) as exc:
        load_target(_write(tmp_path, data))
    msg = str(exc.value)
    assert msg.startswith(f"{tmp_path / 'loihi1.yaml'}: {field}: "), msg
    assert expect in msg
    assert isinstance(exc.value, ValueError)


def test_exact_message_for_negative_figure(tmp_path, loihi_data):
    loihi_data["energy"]["syn_op"]["value"] = -1
    with pytest.raises(HardwareConfigError, match=r"/loihi1\.yaml: energy\.syn_op\.value: expected a non-negative number, got -1$"):
        load_target(_write(tmp_path, loihi_data))


def test_optional_sections_and_unit_conversion(tmp_path):
    data = {
        "schema_version": 1, "name": "tiny",
        "energy": {"syn_op": {"value": 500, "unit": "fJ", "source": "made up for a test", "kind": "estimated"}},
        "power": None,
    }
    t = load_target(_write(tmp_path, data, "tiny.yaml"))
    assert t.core is None and t.power.static is None and t.timing.time_per_step is None
    assert t.energy.syn_op.si == pytest.approx(0.5e-12)
    assert list(t.estimates()) == ["energy.syn_op"]


def test_bad_files(tmp_path):
    with pytest.raises(HardwareConfigError, match="not a built-in target"):
        load_target(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(HardwareConfigError, match=r"/bad\.yaml: not valid YAML"):
        load_target(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(HardwareConfigError, match=r"/list\.yaml: expected a mapping"):
        load_target(tmp_path / "list.yaml")
    (tmp_path / "obj.yaml").write_text("!!python/object:os.system {}\n")
    with pytest.raises(HardwareConfigError, match="not valid YAML"):  # safe_load refuses
        load_target(tmp_path / "obj.yaml")
