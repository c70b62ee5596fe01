"""Hostile voice models, indexes and archives, imported as users send them (`tests.hostile_models`).

Each case goes through the real import job (staged upload, `submit_import`, the embedded
Prefect flow) and must end failed with its one sentence, with nothing stored, no voice
registered, the code in a crafted pickle never run, and the process's peak memory during the
job bounded; a good import right after still works. Fast unit tests pin the rules themselves:
every real RVC geometry passes, the index walk reads both list layouts faiss writes, and an
unsafe torch is refused.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flows.submit import follow, stage_upload, submit_import
from flows.voices import list_voices
from gpu_worker.errors import BadVoice, EngineError
from tests.hostile_models import HOSTILE, build
from tests.wording import refused

MAX_PEAK_MB = 120
"""Extra resident memory an import job may reach: a tiny model needs a few MB; the cases
would need gigabytes to terabytes if what they declare were allocated."""


def _rss_kb(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1))


def _reset_peak() -> int:
    """Reset this process's peak resident size to its current size (Linux), and return it."""
    Path("/proc/self/clear_refs").write_text("5")
    return _rss_kb("VmRSS")


def _stored(settings, prefix: str) -> list[Path]:
    root = settings.data_dir / "files" / prefix
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _one_sentence(text: str) -> None:
    assert "Traceback" not in text and "\n" not in text and len(text) <= 220, text
    assert text.endswith(".") and ". " not in text, text


@pytest.fixture(scope="module")
def cases(tmp_path_factory, voice_files) -> dict:
    """Every hostile case, built once from the tiny voice alice."""
    pth, index = voice_files["alice"]
    root = tmp_path_factory.mktemp("hostile")
    return {name: build(name, root / name, pth, index) for name in HOSTILE}


def test_the_corpus_covers_every_kind():
    assert len(HOSTILE) >= 18
    for kind in ("index_", "zip_"):
        assert sum(name.startswith(kind) for name in HOSTILE) >= 6


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_import_is_refused_cleanly(name, cases, settings, voice_files):
    s = settings
    files, sentence = cases[name]
    uris = [stage_upload("u1", f, f.name, s=s) for f in files]
    base = _reset_peak()
    job = follow(submit_import("u1", "hostile", uris, s=s), timeout=120)
    peak_mb = (_rss_kb("VmHWM") - base) / 1024

    assert job.state == "failed", job
    assert job.reason == sentence
    _one_sentence(job.reason)
    assert peak_mb < MAX_PEAK_MB, f"{name} took {peak_mb:.0f} MB"
    assert [v.name for v in list_voices(s, "u1") if v.owner == "u1"] == []
    assert _stored(s, "voices") == [] and _stored(s, "tmp/uploads") == []
    assert not (files[0].parent / "pwned").exists()  # the crafted pickle never ran

    pth, index = voice_files["bob"]
    good = follow(
        submit_import("u1", "Bob", [stage_upload("u1", f, f.name, s=s) for f in (pth, index)], s=s),
        timeout=120,
    )
    assert good.state == "succeeded", good.reason
    assert good.result["index"] is True
    assert [v.name for v in list_voices(s, "u1") if v.owner == "u1"] == ["Bob"]


# -- the rules, directly -------------------------------------------------------------------------

RATES = {"32k": 32000, "40k": 40000, "48k": 48000}
TINY_SIZES = {2: 8, 3: 16, 4: 32, 5: 2, 6: 1, 7: 3, 10: [3], 11: [[1, 3, 5]], 13: 32, 16: 16}
"""`config` positions and values that shrink a real geometry to the tests' tiny one."""


@pytest.mark.parametrize("f0", [True, False])
@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("rate", sorted(RATES))
def test_every_real_geometry_passes_and_matches_the_engine(rate, version, f0):
    """rvc-next's own configs pass, full size and shrunk, and the shapes the rules expect are
    exactly those of the synthesizer rvc-next builds from them."""
    import torch
    from rvc_next.engine.models.extract import config_for
    from rvc_next.engine.models.loader import synthesizer_class

    from gpu_worker.model_check import check_voice, expected_shapes, parse_config, posterior_shapes

    full = config_for(rate, version)
    tiny = [TINY_SIZES.get(i, value) for i, value in enumerate(full)]
    for config in (full, tiny):
        with torch.device("meta"):
            state = synthesizer_class(version, f0)(*config, is_half=False).state_dict()
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        geo = parse_config(config, "x.pth")
        assert geo.sample_rate == RATES[rate]
        assert shapes == {**expected_shapes(geo, version, f0, 109), **posterior_shapes(geo)}
        voice = {k: (v, "float16") for k, v in shapes.items() if not k.startswith("enc_q.")}
        check_voice(config, voice, version, f0, "x.pth")


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("rate", sorted(RATES))
def test_what_training_exports_passes(rate, version):
    """The config a trained voice is exported with (rvc-next's, and the tests' tiny one)."""
    from rvc_next.engine.models.checkpoint import small_config_from_hparams
    from rvc_next.engine.train.hparams import HParams, default_config

    from gpu_worker.model_check import parse_config
    from tests.tiny_rvc import TINY_TRAIN_OVERRIDE

    real = default_config(version, rate)
    shrink = {k: v for k, v in TINY_TRAIN_OVERRIDE["model"].items() if "upsample_" not in k}
    tiny = {**real, "model": {**real["model"], **shrink, "upsample_initial_channel": 32}}
    for config in (real, tiny):
        parse_config(small_config_from_hparams(HParams(**config)), "trained.pth")


def test_newer_weight_norm_names_are_read(tmp_path, voice_files):
    """Newer trainers save weight norm as `parametrizations.weight.original0/1`."""
    from gpu_worker.convert import inspect_voice
    from tests.hostile_models import edit_voice

    def rename(data):
        data["weight"] = {
            k.replace(".weight_g", ".parametrizations.weight.original0").replace(
                ".weight_v", ".parametrizations.weight.original1"
            ): v
            for k, v in data["weight"].items()
        }

    renamed = edit_voice(voice_files["alice"][0], tmp_path / "new.pth", rename)
    assert inspect_voice(renamed).version == "v2"


def test_index_walk_reads_both_list_layouts(tmp_path):
    """faiss writes list sizes in full or, when most lists are empty, as sparse pairs."""
    import faiss
    import numpy as np

    from gpu_worker.model_check import check_index

    data = np.random.default_rng(1).standard_normal((60, 256)).astype(np.float32)
    for nlist, n in ((4, 60), (40, 3)):
        ivf = faiss.index_factory(256, f"IVF{nlist},Flat")
        ivf.train(data)
        ivf.add(data[:n])
        path = tmp_path / f"added_{nlist}.index"
        faiss.write_index(ivf, str(path))
        layout = b"full" if nlist == 4 else b"sprs"
        assert layout in path.read_bytes()[:200_000]
        assert check_index(path, 256) == n
        assert faiss.read_index(str(path)).ntotal == n


def test_an_unsafe_torch_is_refused(monkeypatch, voice_files):
    import torch
    from torch.torch_version import TorchVersion

    from gpu_worker.rvc_checkpoint import inspect_voice, require_safe_torch, torch_is_safe

    assert torch_is_safe()  # the installed torch
    assert not torch_is_safe("2.5.1") and not torch_is_safe("2.4.0+cpu") and torch_is_safe("2.6.0")
    with refused(EngineError, match="upgrade torch to 2.6"):
        require_safe_torch("2.5.1")
    monkeypatch.setattr(torch, "__version__", TorchVersion("2.5.1"))
    with refused(EngineError, match="cannot be loaded safely") as err:
        inspect_voice(voice_files["alice"][0])
    assert not isinstance(err.value, BadVoice)  # the operator's problem, not the voice's
