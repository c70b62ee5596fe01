"""Tiny rvc-next assets with random weights, in the exact file formats the real loaders read.

Nothing here downloads anything. Each builder writes files that rvc-next's own loaders open
unchanged (``transformers`` for HuBERT, ``torch.load(weights_only=True)`` plus a strict
``load_state_dict`` for RMVPE and the base models, rvc-next's small-model reader for the voice,
``faiss.read_index`` for the index):

- ``hubert_base/``: a transformers HuBERT folder (``config.json``, ``preprocessor_config.json``,
  ``pytorch_model.bin`` in fp16 as the real asset). Its hidden size stays 768 because v2 voices read
  768-dim features; everything else is shrunk (1 layer, 32-channel feature extractor): about 3.3 M
  parameters, 6.5 MB.
- ``rmvpe/rmvpe.pt``: RMVPE's architecture is fixed by rvc-next (``E2E(4, 1, (2, 2))``,
  90.5 M parameters, 741 tensors), so its state dict cannot shrink in shape. Every float tensor
  is a view of one shared random fp16 storage the size of the largest tensor (2.36 M values), so
  the file is 4.9 MB instead of 181 MB, while ``torch.load`` and the strict ``load_state_dict``
  see every shape they expect.
- ``pretrained_v2/f0G40k.pth`` / ``f0D40k.pth``: ``{"model": state_dict}`` in fp16. G is built with
  :data:`TINY_MODEL` (pass :data:`TINY_TRAIN_OVERRIDE` as rvc-next's ``config_override`` so the
  training loop builds the same shapes). D is rvc-next's fixed ``MultiPeriodDiscriminatorV2``
  (71.4 M parameters), stored with the same shared-storage trick (about 10 MB). Training builds
  that full-size D: each step takes seconds on a CPU and every ``D_*.pth`` it saves is 857 MB
  (weights and Adam state), so train tiny runs with ``save_latest_only=True``.
- a v2 40 kHz voice ``.pth`` laid out as community RVC v2 checkpoints are
  (``weight``/``config``/``info``/``sr``/``f0``/``version``), with the shrunk config, and an
  ``added_IVF…_Flat_nprobe_1_<name>_v2.index`` faiss index over 768-dim vectors.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TINY_MODEL: dict[str, Any] = {
    "inter_channels": 8,
    "hidden_channels": 16,
    "filter_channels": 32,
    "n_heads": 2,
    "n_layers": 1,
    "kernel_size": 3,
    "p_dropout": 0,
    "resblock": "1",
    "resblock_kernel_sizes": [3],
    "resblock_dilation_sizes": [[1, 3, 5]],
    "upsample_rates": [10, 10, 2, 2],
    "upsample_initial_channel": 32,
    "upsample_kernel_sizes": [16, 16, 4, 4],
    "use_spectral_norm": False,
    "gin_channels": 16,
    "spk_embed_dim": 109,
}
"""The generator's hyperparameters: rvc-next's v2 40k ones, shrunk (rates and kernels kept)."""

FULL_MODEL: dict[str, Any] = {
    **TINY_MODEL,
    "inter_channels": 192,
    "hidden_channels": 192,
    "filter_channels": 768,
    "n_layers": 6,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "upsample_initial_channel": 512,
    "gin_channels": 256,
}
"""rvc-next's real v2 40k generator (``extract.config_for("40k", "v2")``), for benchmarks."""

TINY_TRAIN_OVERRIDE: dict[str, Any] = {"model": copy.deepcopy(TINY_MODEL)}
"""rvc-next ``TrainRequest.config_override`` that makes training build :data:`TINY_MODEL`."""

TINY_TRAIN_CONFIG: dict[str, Any] = {**TINY_TRAIN_OVERRIDE, "train": {"segment_size": 4000}}
"""The override tests train with: rvc-next always builds the full-size discriminator, whose
cost follows the segment length, so shorter segments make a CPU step take 1-2 s."""

SAMPLE_RATE = 40000
FILTER_LENGTH = 2048
SEGMENT_FRAMES = 32


@dataclass(frozen=True)
class RvcAssets:
    assets_dir: Path
    """Holds ``hubert_base/``, ``rmvpe/rmvpe.pt`` and ``pretrained_v2/f0{G,D}40k.pth``."""
    voice_pth: Path
    index_path: Path


def small_config(model: dict[str, Any] = TINY_MODEL, sample_rate: int = SAMPLE_RATE) -> list[Any]:
    """The 18-value ``config`` list of a small model, in RVC's order."""
    return [
        FILTER_LENGTH // 2 + 1,
        SEGMENT_FRAMES,
        model["inter_channels"],
        model["hidden_channels"],
        model["filter_channels"],
        model["n_heads"],
        model["n_layers"],
        model["kernel_size"],
        model["p_dropout"],
        model["resblock"],
        model["resblock_kernel_sizes"],
        model["resblock_dilation_sizes"],
        model["upsample_rates"],
        model["upsample_initial_channel"],
        model["upsample_kernel_sizes"],
        model["spk_embed_dim"],
        model["gin_channels"],
        sample_rate,
    ]


def _seed(seed: int) -> Any:
    import torch

    return torch.Generator().manual_seed(seed)


def _shared_state(
    meta_state: dict[str, Any], seed: int, dtype: Any = None, std: float = 0.02
) -> OrderedDict[str, Any]:
    """Random tensors of ``meta_state``'s shapes that all view one storage (small on disk).

    BatchNorm running variances view a second, positive storage; running means and integer
    tensors are zeros. ``dtype`` overrides the floating dtype (fp16 for the base models).
    """
    import torch

    floats = {k: v for k, v in meta_state.items() if v.is_floating_point()}
    variances = [v.numel() for k, v in floats.items() if k.endswith("running_var")]
    dtype = dtype or next(iter(floats.values())).dtype
    pool = (torch.randn(max(v.numel() for v in floats.values()), generator=_seed(seed)) * std).to(
        dtype
    )
    positive = (torch.rand(max(variances, default=1), generator=_seed(seed + 1)) * 0.5 + 0.75).to(
        dtype
    )
    out: OrderedDict[str, Any] = OrderedDict()
    for key, v in meta_state.items():
        if not v.is_floating_point():
            out[key] = torch.zeros(v.shape, dtype=v.dtype)
        elif key.endswith("running_var"):
            out[key] = positive[: v.numel()].view(v.shape)
        elif key.endswith("running_mean"):
            out[key] = torch.zeros(v.shape, dtype=dtype)
        else:
            out[key] = pool[: v.numel()].view(v.shape)
    return out


def build_hubert(assets_dir: Path, seed: int = 0, *, full: bool = False) -> Path:
    """``<assets>/hubert_base`` with a 768-wide, one-layer HuBERT plus ``final_proj``.

    ``full`` builds HuBERT base's real shape instead (12 layers, 94 M parameters), for
    benchmarks."""
    import torch
    from transformers import HubertConfig, HubertModel

    folder = Path(assets_dir) / "hubert_base"
    folder.mkdir(parents=True, exist_ok=True)
    tiny = HubertConfig(
        hidden_size=768,
        num_hidden_layers=1,
        num_attention_heads=12,
        intermediate_size=128,
        conv_dim=(32,) * 7,
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=16,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        classifier_proj_size=256,
        architectures=["HubertModelWithFinalProj"],
    )
    config = (
        HubertConfig(classifier_proj_size=256, architectures=tiny.architectures) if full else tiny
    )
    torch.manual_seed(seed)
    model = HubertModel(config).eval()
    state = OrderedDict((k, v.detach().half().contiguous()) for k, v in model.state_dict().items())
    proj = torch.nn.Linear(768, 256)
    state["final_proj.weight"] = proj.weight.detach().half()
    state["final_proj.bias"] = proj.bias.detach().half()
    torch.save(state, folder / "pytorch_model.bin")
    config.to_json_file(str(folder / "config.json"))
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "do_normalize": False,
                "feature_extractor_type": "Wav2Vec2FeatureExtractor",
                "feature_size": 1,
                "padding_side": "right",
                "padding_value": 0,
                "return_attention_mask": False,
                "sampling_rate": 16000,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return folder


def build_rmvpe(assets_dir: Path, seed: int = 1) -> Path:
    """``<assets>/rmvpe/rmvpe.pt``: a full-shape RMVPE state dict on one shared random storage."""
    import torch
    from rvc_next.engine.f0.rmvpe import E2E

    with torch.device("meta"):
        meta = E2E(4, 1, (2, 2)).state_dict()
    path = Path(assets_dir) / "rmvpe" / "rmvpe.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_shared_state(meta, seed, torch.float16), path)
    return path


def tiny_generator(seed: int = 2, model: dict[str, Any] = TINY_MODEL) -> Any:
    """rvc-next's v2 pitch-guided 40 kHz synthesizer, built with ``model`` and random weights."""
    import torch
    from rvc_next.engine.models.synthesizer import SynthesizerTrnMs768NSFsid

    torch.manual_seed(seed)
    kwargs = {k: v for k, v in model.items()}
    return SynthesizerTrnMs768NSFsid(
        FILTER_LENGTH // 2 + 1, SEGMENT_FRAMES, **kwargs, is_half=False, sr="40k"
    ).eval()


def build_pretrained(assets_dir: Path, seed: int = 3) -> tuple[Path, Path]:
    """``<assets>/pretrained_v2/f0G40k.pth`` and ``f0D40k.pth``: ``{"model": state_dict}``, fp16."""
    import torch
    from rvc_next.engine.models.synthesizer import MultiPeriodDiscriminatorV2

    folder = Path(assets_dir) / "pretrained_v2"
    folder.mkdir(parents=True, exist_ok=True)
    g_state = OrderedDict(
        (k, v.detach().half()) for k, v in tiny_generator(seed).state_dict().items()
    )
    g_path = folder / "f0G40k.pth"
    torch.save({"model": g_state}, g_path)
    with torch.device("meta"):
        meta = MultiPeriodDiscriminatorV2(False).state_dict()
    d_path = folder / "f0D40k.pth"
    torch.save({"model": _shared_state(meta, seed + 1, torch.float16)}, d_path)
    return g_path, d_path


def build_voice(
    path: Path, seed: int = 4, name: str = "tiny", model: dict[str, Any] = TINY_MODEL
) -> Path:
    """A v2 40 kHz pitch-guided voice ``.pth`` in the community small-model layout (fp16).

    ``name`` is not stored: community files carry no name field (the file name is the name).
    ``model`` is :data:`TINY_MODEL`, or :data:`FULL_MODEL` for a real-size voice."""
    import torch

    net_g = tiny_generator(seed, model)
    weight = OrderedDict(
        (k, v.detach().half()) for k, v in net_g.state_dict().items() if "enc_q" not in k
    )
    data: dict[str, Any] = OrderedDict()
    data["weight"] = weight
    data["config"] = small_config(model)
    data["info"] = "20epoch"
    data["sr"] = "40k"
    data["f0"] = 1
    data["version"] = "v2"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return path


def build_index(folder: Path, name: str = "tiny", vectors: int = 200, seed: int = 5) -> Path:
    """``added_IVF<n>_Flat_nprobe_1_<name>_v2.index`` over random 768-dim vectors, as RVC builds."""
    import faiss
    import numpy as np

    rng = np.random.default_rng(seed)
    data = rng.standard_normal((vectors, 768)).astype(np.float32)
    n_ivf = max(1, min(int(16 * np.sqrt(vectors)), vectors // 39))
    index = faiss.index_factory(768, f"IVF{n_ivf},Flat")
    faiss.extract_index_ivf(index).nprobe = 1
    index.train(data)
    index.add(data)
    path = Path(folder) / f"added_IVF{n_ivf}_Flat_nprobe_1_{name}_v2.index"
    path.parent.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(path))
    return path


def build_rvc_assets(root: Path, *, rmvpe: bool = True, pretrained: bool = True) -> RvcAssets:
    """Everything under ``root``: ``assets/`` (HuBERT, RMVPE, base models) and ``voices/``."""
    root = Path(root)
    assets_dir = root / "assets"
    build_hubert(assets_dir)
    if rmvpe:
        build_rmvpe(assets_dir)
    if pretrained:
        build_pretrained(assets_dir)
    voice = build_voice(root / "voices" / "tiny.pth")
    index = build_index(root / "voices")
    return RvcAssets(assets_dir=assets_dir, voice_pth=voice, index_path=index)


def voice_like(seconds: float, sr: int = 32000, seed: int = 0) -> Any:
    """Mono float32 'singing' for training tests and benchmarks: phrases of sung syllables.

    Each syllable has its own note (a glide into it, then vibrato) and vowel: harmonics of the
    pitch shaped by that vowel's formants, a little breath noise, soft onsets. Phrases of 2-3.5 s
    are separated by half-second pauses, so a silence slicer finds natural cuts."""
    import numpy as np

    vowels = np.array(
        [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480],
         [570, 840, 2410]], dtype=np.float64,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros(n, np.float32)
    pos = int(0.2 * sr)
    base = 110.0 * 2 ** rng.uniform(0, 1)
    prev_hz = base
    while pos < n - int(0.5 * sr):
        phrase_end = min(n - int(0.2 * sr), pos + int(rng.uniform(2.0, 3.5) * sr))
        phase = 0.0
        while pos < phrase_end:
            length = min(int(rng.uniform(0.2, 0.4) * sr), phrase_end - pos)
            if length < int(0.05 * sr):
                break
            t = np.arange(length) / sr
            target = base * 2 ** (rng.integers(0, 12) / 12)
            glide = np.minimum(t / 0.06, 1.0)
            hz = prev_hz + (target - prev_hz) * glide
            hz = hz * 2 ** (0.3 / 12 * np.sin(2 * np.pi * 5.5 * t) * glide)
            prev_hz = target
            ph = phase + 2 * np.pi * np.cumsum(hz) / sr
            phase = float(ph[-1])
            formants = vowels[rng.integers(0, len(vowels))]
            y = np.zeros(length)
            for k in range(1, int(min(5000, sr / 2 - 500) // base) + 1):
                fk = k * hz
                gain = sum(1.0 / (1.0 + ((fk - f) / (60 + 0.06 * f)) ** 2) for f in formants)
                y += (gain / k**0.7) * np.sin(k * ph) * (fk < sr / 2 - 200)
            y += 0.01 * rng.standard_normal(length)
            env = np.minimum(1.0, np.minimum(t / 0.02, (t[-1] - t) / 0.03 + 0.3))
            out[pos : pos + length] = (y * env).astype(np.float32)
            pos += length
        pos += int(rng.uniform(0.45, 0.6) * sr)
    peak = float(np.abs(out).max()) or 1.0
    return (0.5 * out / peak).astype(np.float32)
