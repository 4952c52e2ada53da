"""A fifth task costs one folder and one table row: a toy image → image task ("denoise", a Gaussian filter),
defined outside mitk in a package of its own and registered the way a third-party package registers (an entry
point in ``mitk.plugins``), gets its verb, its API call, the batch contract and its evaluation from mitk
without any change to mitk's files.

The package is written into a temporary folder with its ``.dist-info`` (what ``pip install`` leaves), and every
command runs in a subprocess with that folder on ``PYTHONPATH``. Outputs are checked against independent
oracles: SciPy's ``gaussian_filter`` for the voxels, SimpleITK for the geometry, numpy for the PSNR.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

PACKAGE = {
    "__init__.py": '''
        """A toy task for mitk: denoise an image with a Gaussian filter."""

        from mitk import hookimpl


        @hookimpl
        def mitk_register_tasks(register):
            from mitk_denoise.task import TASK

            register(TASK)


        @hookimpl
        def mitk_register_plugins(register):
            register("gaussian", task="denoise", factory="mitk_denoise.plugin:GaussianDenoiser",
                     summary="Gaussian filter, sigma in mm")
        ''',
    "task.py": '''
        from pathlib import Path

        from mitk.options import JSON
        from mitk.taskspec import Option, TaskSpec

        TASK = TaskSpec(
            name="denoise", summary="Denoise images; each output on its input's exact grid.",
            plugin_base="mitk_denoise.plugin:DenoisePlugin", runner="mitk_denoise.runner:DenoiseRunner",
            job="mitk_denoise.runner:make_denoise_job", result="mitk_denoise.result:DenoiseResult",
            suffix="_denoised", extension=".nii.gz", verb="mitk_denoise.commands:prepare",
            options=(Option("keep_dtype", ("--keep-dtype",), bool, False, "Write the input's data type."),),
            evaluation="mitk_denoise.commands:evaluate", evaluation_help="PSNR of denoised images against clean ones.",
            evaluation_options=(Option("pred", ("--pred",), Path, help="Denoised image.", required=True),
                              Option("ref", ("--ref",), Path, help="Clean image.", required=True), JSON),
        )
        ''',
    "plugin.py": '''
        import numpy as np

        from mitk.plugin import TaskPlugin


        class DenoisePlugin(TaskPlugin):
            task = "denoise"
            required_methods = ("denoise",)
            needs_weights = False
            trainable = False

            def denoise(self, array, spacing, config):
                raise NotImplementedError


        class GaussianDenoiser(DenoisePlugin):
            def default_config(self):
                return {"sigma_mm": 2.0}

            def denoise(self, array, spacing, config):
                from scipy.ndimage import gaussian_filter

                sigma = [config["sigma_mm"] / s for s in spacing]
                return gaussian_filter(np.asarray(array, dtype=np.float64), sigma)
        ''',
    "result.py": '''
        from dataclasses import dataclass

        from mitk.image import Image
        from mitk.results import ResultFiles, atomic_output


        @dataclass
        class DenoiseResult(ResultFiles):
            image: Image

            def save(self, path, *, overwrite=False):
                from mitk.io.nifti import write_nifti

                with atomic_output(path, overwrite, self.inputs) as temporary:
                    write_nifti(self.image.array, temporary, like=self.image)
                return path
        ''',
    "runner.py": '''
        import numpy as np

        from mitk.image import Image
        from mitk_denoise.result import DenoiseResult


        class DenoiseRunner:
            def __init__(self, model, keep_dtype=False):
                self.model, self.keep_dtype = model, keep_dtype

            def __call__(self, image):
                values = self.model.plugin.denoise(image.array, image.spacing, self.model.config)
                if self.keep_dtype:
                    values = values.astype(image.array.dtype)
                else:
                    values = values.astype(np.float32)
                return DenoiseResult(Image(array=values, affine=image.affine, path=image.path, meta=image.meta))


        def make_denoise_job(model, policy, *, keep_dtype=False, series=None, allow_resample=False):
            from mitk.io.atomic import atomic_path
            from mitk.io.nifti import write_nifti
            from mitk.io.reader import load_image, require_volume
            from mitk.runner.batch import CaseOutcome

            runner = DenoiseRunner(model, keep_dtype=keep_dtype)

            def process(case):
                target = policy.target(case, "_denoised", ".nii.gz")
                if policy.should_skip(target, case):
                    return CaseOutcome(output=target, skipped=True)
                image = require_volume(load_image(case.path, series=series, allow_resample=allow_resample))
                result = runner(image)
                with atomic_path(target, overwrite=policy.overwrite, inputs=policy.inputs_for(case)) as temporary:
                    write_nifti(result.image.array, temporary, like=image)
                return CaseOutcome(output=target, details={"shape": list(image.spatial_shape)})

            return process
        ''',
    "commands.py": '''
        import numpy as np

        from mitk.console import emit_json
        from mitk.taskspec import VerbPlan


        def prepare(values):
            return VerbPlan(values["inputs"], {"keep_dtype": values["keep_dtype"]})


        def evaluate(pred, ref, as_json=False):
            from mitk.io.reader import load_image

            denoised = np.asarray(load_image(pred).array, dtype=np.float64)
            clean = np.asarray(load_image(ref).array, dtype=np.float64)
            mse = float(np.mean((denoised - clean) ** 2))
            peak = float(clean.max() - clean.min())
            psnr = 10 * np.log10(peak ** 2 / mse)
            if as_json:
                emit_json({"psnr_db": psnr, "mse": mse})
            else:
                print(f"PSNR {psnr:.3f} dB")
            return 0
        ''',
}

AFFINE = np.array([[0.0, 0.0, -2.5, 60.0], [-1.5, 0.0, 0.0, 40.0], [0.0, 2.0, 0.0, -30.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy task's package and its ``.dist-info`` (with the entry point), as ``pip install`` leaves them."""
    site = tmp_path_factory.mktemp("site")
    package = site / "mitk_denoise"
    package.mkdir()
    for name, text in PACKAGE.items():
        (package / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    info = site / "mitk_denoise-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mitk-denoise\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[mitk.plugins]\ndenoise = mitk_denoise\n", encoding="utf-8")
    return site


def run(site: Path, *args: str, code: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MITK_")}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1", MITK_PLUGINS_STRICT="1")
    command = [sys.executable, "-c", code, *args] if code is not None else [sys.executable, "-m", "mitk", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real-looking volumes (a smooth body plus noise) on an axis-permuting, flipped, anisotropic grid."""
    folder = tmp_path_factory.mktemp("noisy")
    rng = np.random.default_rng(7)
    i, j, k = np.meshgrid(*(np.linspace(-1, 1, n) for n in (30, 26, 18)), indexing="ij")
    clean = (1000 * np.exp(-((i / 0.6) ** 2 + (j / 0.5) ** 2 + (k / 0.7) ** 2))).astype(np.float32)
    nib.save(nib.Nifti1Image(clean, AFFINE), folder / "clean.nii.gz")
    paths = []
    for name in ("a", "b"):
        noisy = (clean + rng.normal(0, 60, clean.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(noisy, AFFINE), folder / f"{name}.nii.gz")
        paths.append(folder / f"{name}.nii.gz")
    return paths[0], paths[1]


def expected(path: Path) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    image = nib.load(path)
    spacing = np.linalg.norm(image.affine[:3, :3], axis=0)
    return gaussian_filter(np.asarray(image.dataobj, dtype=np.float64), [2.0 / s for s in spacing]).astype(np.float32)


def test_the_table_row_makes_a_verb_with_the_shared_batch_options(site: Path) -> None:
    listing = run(site, "--help")
    assert listing.returncode == 0, listing.stderr
    assert "denoise" in listing.stdout
    helped = run(site, "denoise", "--help")
    assert helped.returncode == 0, helped.stderr
    for flag in ("--keep-dtype", "--plugin", "--output-dir", "--overwrite", "--skip-existing", "--manifest",
                 "--shard", "--shard-by", "--executor", "--json", "--set", "--series", "--allow-resample"):
        assert flag in helped.stdout, flag
    plugins = run(site, "plugins", "list", "--json")
    assert {"name": "gaussian", "task": "denoise"}.items() <= next(
        row for row in json.loads(plugins.stdout)["plugins"] if row["name"] == "gaussian").items()


def test_cli_batch_contract_manifest_skip_existing_and_geometry(site: Path, noisy: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    import SimpleITK as sitk

    out, manifest = tmp_path / "out", tmp_path / "m.jsonl"
    done = run(site, "denoise", *map(str, noisy), "--plugin", "gaussian", "-d", str(out), "--manifest",
               str(manifest), "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["task"] == "denoise" and document["summary"]["ok"] == 2
    for path in noisy:
        written = out / path.name.replace(".nii.gz", "_denoised.nii.gz")
        assert np.allclose(np.asarray(nib.load(written).dataobj), expected(path), atol=1e-4)
        given, result = sitk.ReadImage(str(path)), sitk.ReadImage(str(written))
        assert result.GetSize() == given.GetSize()
        assert np.allclose(result.GetOrigin(), given.GetOrigin(), atol=1e-5)
        assert np.allclose(result.GetDirection(), given.GetDirection(), atol=1e-6)
        assert np.allclose(result.GetSpacing(), given.GetSpacing(), atol=1e-6)
    assert [json.loads(line)["status"] for line in manifest.read_text().splitlines()] == ["ok", "ok"]

    again = run(site, "denoise", *map(str, noisy), "--plugin", "gaussian", "-d", str(out), "--skip-existing",
                "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["summary"]["skipped"] == 2
    refused = run(site, "denoise", str(noisy[0]), "--plugin", "gaussian", "-d", str(out))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr  # no silent overwrite


def test_shards_cover_the_batch_and_merge(site: Path, noisy: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifests = []
    for index in (0, 1):
        manifest = tmp_path / f"shard{index}.jsonl"
        done = run(site, "denoise", *map(str, noisy), "--plugin", "gaussian", "-d", str(out), "--shard",
                   f"{index}/2", "--shard-by", "order", "--manifest", str(manifest))
        assert done.returncode == 0, done.stderr
        manifests.append(manifest)
    merged = run(site, "manifest", "merge", *map(str, manifests), "--json")
    assert merged.returncode == 0, merged.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a_denoised.nii.gz", "b_denoised.nii.gz"]


def test_python_api_call_equals_the_cli(site: Path, noisy: tuple[Path, Path], tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import sys
        import nibabel as nib
        import numpy as np
        import mitk

        path, out = sys.argv[1], sys.argv[2]
        model = mitk.load("gaussian", settings={"sigma_mm": 2.0})
        assert model.task == "denoise", model.task
        result = model.denoise(nib.load(path))
        once = mitk.denoise(path, plugin="gaussian")
        assert np.array_equal(result.image.array, once.image.array)
        result.save(out)
        print("ok")
        """)
    saved = tmp_path / "api.nii.gz"
    done = run(site, str(noisy[0]), str(saved), code=code)
    assert done.returncode == 0, done.stderr
    cli = tmp_path / "cli.nii.gz"
    assert run(site, "denoise", str(noisy[0]), "--plugin", "gaussian", "-o", str(cli)).returncode == 0
    assert np.array_equal(np.asarray(nib.load(saved).dataobj), np.asarray(nib.load(cli).dataobj))


def test_evaluation_verb_from_the_declared_options(site: Path, noisy: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "one.nii.gz"
    assert run(site, "denoise", str(noisy[0]), "--plugin", "gaussian", "-o", str(out)).returncode == 0
    clean = noisy[0].with_name("clean.nii.gz")
    done = run(site, "evaluate", "denoise", "--pred", str(out), "--ref", str(clean), "--json")
    assert done.returncode == 0, done.stderr
    reference = np.asarray(nib.load(clean).dataobj, dtype=np.float64)
    mse = np.mean((np.asarray(nib.load(out).dataobj, dtype=np.float64) - reference) ** 2)
    psnr = 10 * np.log10((reference.max() - reference.min()) ** 2 / mse)
    assert json.loads(done.stdout)["psnr_db"] == pytest.approx(psnr)
    # the denoised image is closer to the clean one than the noisy input
    noisy_mse = np.mean((np.asarray(nib.load(noisy[0]).dataobj, dtype=np.float64) - reference) ** 2)
    assert mse < noisy_mse


def test_toy_task_registers_through_the_task_hook_in_process(site: Path, monkeypatch: pytest.MonkeyPatch,
                                                             mitk_plugins) -> None:
    """``mitk_register_tasks`` in-process: the row is in the table and a plugin of it checks against its base."""
    monkeypatch.syspath_prepend(str(site))
    import mitk_denoise

    from mitk.taskspecs import derived_suffixes, get_task

    registry = mitk_plugins(mitk_denoise)
    assert get_task("denoise").suffix == "_denoised" and "_denoised" in derived_suffixes()
    assert registry.get("gaussian", "denoise").load().task == "denoise"
