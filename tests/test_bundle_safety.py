"""Hostile MONAI bundles run nothing: each payload creates a marker file when MONAI's own parser (or pickle)
meets it, and mitk refuses it with a one-line error naming the key, the marker never created."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bundle_factory import edit_config, make_bundle

LUNG_CT = Path(__file__).parent / "data" / "lung1_image.nii.gz"

pytestmark = pytest.mark.usefixtures("single_threaded_torch")


@pytest.fixture(scope="module")
def spleen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle("spleen_ct_segmentation", tmp_path_factory.mktemp("spleen"))


def hostile_bundle(spleen: Path, folder: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    root = folder / "bundle"
    shutil.copytree(spleen, root)
    edit_config(root, "configs/inference.json", change)
    return root


def os_system_target(marker: Path) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.update(network_def={"_target_": "os.system", "command": f"touch {marker}"})


def import_expression(marker: Path) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["inferer"].update(roi_size=f"$__import__('os').system('touch {marker}')")


def open_expression(marker: Path) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["preprocessing"]["transforms"][2].update(axcodes=f"$open('{marker}', 'w').write('RAS')")


PAYLOADS = {"os.system target": (os_system_target, "network_def", "network_def#_target_: _target_ 'os.system'"),
            "$__import__": (import_expression, "inferer", "inferer#roi_size: expression"),
            "$open(...)": (open_expression, "preprocessing", "preprocessing#transforms#2#axcodes: expression")}


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_monai_parser_runs_the_payload(payload: str, spleen: Path, tmp_path: Path) -> None:
    """The control: MONAI's ConfigParser executes each payload (so the refusal below is a real one)."""
    from monai.bundle import ConfigParser

    make, key, _ = PAYLOADS[payload]
    marker = tmp_path / "marker"
    root = hostile_bundle(spleen, tmp_path, make(marker))
    parser = ConfigParser()
    parser.read_config(str(root / "configs/inference.json"))
    with pytest.raises(Exception):  # noqa: B017 - what fails after the payload ran does not matter
        parser.get_parsed_content(key)
        parser.get_parsed_content(key)(None)
    if not marker.exists():
        parser.get_parsed_content(key)  # some payloads run without failing
    assert marker.exists()


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_mitk_refuses_the_payload(payload: str, spleen: Path, tmp_path: Path, run_inprocess) -> None:
    make, _, message = PAYLOADS[payload]
    marker = tmp_path / "marker"
    root = hostile_bundle(spleen, tmp_path, make(marker))
    out = tmp_path / "seg.nii.gz"
    for command in (("segment", LUNG_CT, "--weights", root, "-o", out), ("info", "--weights", root)):
        code, _, err = run_inprocess(*command)
        assert not marker.exists()
        if command[0] == "segment":
            assert code != 0 and message in err and "Traceback" not in err
            assert len(err.strip().splitlines()) == 1
    assert not out.exists()


class Payload:
    """Pickles to ``os.system('touch MARKER')``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.marker}",)


def test_pickled_payload_in_model_pt_runs_nothing(spleen: Path, tmp_path: Path, run_inprocess) -> None:
    import torch

    marker = tmp_path / "marker"
    root = tmp_path / "bundle"
    shutil.copytree(spleen, root)
    torch.save({"model": Payload(marker)}, root / "models" / "model.pt")
    torch.load(root / "models" / "model.pt", weights_only=False)  # the control: plain unpickling runs it
    assert marker.exists()
    marker.unlink()
    code, _, err = run_inprocess("segment", LUNG_CT, "--weights", root, "-o", tmp_path / "seg.nii.gz")
    assert code != 0 and "models/model.pt is not a plain tensor file" in err and "Traceback" not in err
    assert not marker.exists()


def test_file_names_that_leave_the_bundle_are_refused(spleen: Path, tmp_path: Path, run_inprocess) -> None:
    import torch

    marker = tmp_path / "marker"
    outside = tmp_path / "outside.pt"
    torch.save({"model": Payload(marker)}, outside)
    root = tmp_path / "bundle"
    shutil.copytree(spleen, root)
    (root / "models" / "model.pt").unlink()
    (root / "models" / "model.pt").symlink_to(Path("..") / ".." / "outside.pt")
    code, _, err = run_inprocess("segment", LUNG_CT, "--weights", root, "-o", tmp_path / "seg.nii.gz")
    assert code != 0 and "models/model.pt leads outside the bundle folder" in err
    # A config that points at a file of its own choosing (a % macro, ../ in the name) is not followed either.
    edit_config(root, "configs/inference.json",
                lambda d: d.update(network_def="%../../outside.json#network_def"))
    (root / "models" / "model.pt").unlink()
    shutil.copy(spleen / "models" / "model.pt", root / "models" / "model.pt")
    code, _, err = run_inprocess("segment", LUNG_CT, "--weights", root, "-o", tmp_path / "seg.nii.gz")
    assert code != 0 and "network_def: '%../../outside.json#network_def' reads another file" in err
    assert not marker.exists()


def test_torchscript_runs_only_when_its_sha256_is_pinned(spleen: Path, tmp_path: Path, run_inprocess) -> None:
    import torch

    from mitk.bundles import read_bundle
    from mitk.bundles.resolver import SafeResolver

    root = tmp_path / "bundle"
    shutil.copytree(spleen, root)
    network = SafeResolver(read_bundle(root).inference).build("network_def")
    network.load_state_dict(torch.load(root / "models" / "model.pt", weights_only=True))
    torch.jit.save(torch.jit.trace(network.eval(), torch.zeros(1, 1, 32, 32, 32)), root / "models" / "model.ts")
    (root / "models" / "model.pt").unlink()
    digest = hashlib.sha256((root / "models" / "model.ts").read_bytes()).hexdigest()
    out = tmp_path / "seg.nii.gz"
    code, _, err = run_inprocess("segment", LUNG_CT, "--weights", root, "-o", out)
    assert code != 0 and f"refused unless you pin it with --set torchscript_sha256={digest}" in err
    code, _, err = run_inprocess("segment", LUNG_CT, "--weights", root, "-o", out,
                                 "--set", f"torchscript_sha256={'0' * 64}")
    assert code != 0 and f"has sha256 {digest}, not the pinned" in err and not out.exists()
    code, _, err = run_inprocess("segment", LUNG_CT, "--weights", root, "-o", out,
                                 "--set", f"torchscript_sha256={digest}")
    assert code == 0, err
    assert out.exists()


@pytest.mark.parametrize(("expression", "expected"), [
    ("@image_key + '_meta_dict'", "image_meta_dict"), ("torch.float32", "float32"), ("[96, 96, 2 * 48]", [96, 96, 96]),
    ("-57", -57), ("@network_def#channels", [16, 32, 64, 128, 256])])
def test_expression_subset(expression: str, expected: Any) -> None:
    from mitk.bundles.expressions import evaluate

    config = {"image_key": "image", "network_def": {"channels": [16, 32, 64, 128, 256]}}

    def reference(name: str) -> Any:
        from mitk.bundles.resolver import SafeResolver

        return SafeResolver(config).reference(name)

    value = evaluate(expression, "key", reference)
    assert (str(value).rsplit(".", 1)[-1] if expression.startswith("torch") else value) == expected


@pytest.mark.parametrize("expression", ["lambda x: x", "__import__('os')", "[i for i in range(3)]", "'x' * 10**9",
                                        "().__class__", "os.system", "@a[0]"])
def test_expression_outside_the_subset_is_refused(expression: str) -> None:
    from mitk.bundles.expressions import evaluate
    from mitk.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"^key: "):
        evaluate(expression, "key", lambda name: [1])


def test_a_network_that_would_download_weights_is_refused() -> None:
    from bundle_factory import BUNDLES

    from mitk.bundles import read_bundle
    from mitk.bundles.resolver import SafeResolver
    from mitk.errors import CheckpointError

    config = read_bundle(BUNDLES / "endoscopic_tool_segmentation").inference
    config["network_def"]["pretrained"] = True
    with pytest.raises(CheckpointError, match=r"^network_def#pretrained: would download pretrained weights"):
        SafeResolver(config).build("network_def")
