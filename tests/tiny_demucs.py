"""Tiny random-weight Demucs models in the exact on-disk format Demucs's loader reads.

`build_demucs_repo(folder, name)` writes a small HTDemucs (same class and code path as the
released `htdemucs`, fewer channels and layers, 2 s segments) as a package
`{"klass", "args", "kwargs", "state"}` saved with `demucs.states.save_with_checksum`
(`<sig>-<sha256[:8]>.th`), plus the bag file `<name>.yaml` listing it, so that
`demucs.pretrained.get_model(name, repo=folder)` loads it for real. Builds in well under 1 s.

`sources=SOURCES_6S` builds the six-source layout of the released `htdemucs_6s` (guitar and
piano too). `voice_only=True` builds a separator that hears nothing but voice, as a trained
model does on an a cappella song: the output layers of every other source are zero (their
stems are near-silent) and the vocal's are amplified to a song's level.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

SOURCES = ["drums", "bass", "other", "vocals"]
SOURCES_6S = ["drums", "bass", "other", "vocals", "guitar", "piano"]  # htdemucs_6s's order
VOICE_ONLY_GAIN = 60.0

# The released htdemucs differs in channels=48, bottom_channels=512, t_layers=5, t_heads=8,
# t_hidden_scale=4 and segment=39/5 (41,984,456 parameters); see `full_htdemucs_kwargs`.
TINY_KWARGS = dict(
    channels=8,  # Demucs needs >= 8 (its norm groups)
    depth=4,
    dconv_mode=3,
    bottom_channels=32,
    t_layers=2,  # one self-attention and one cross-attention layer
    t_heads=4,
    t_hidden_scale=1.0,
    segment=Fraction(2, 1),
)


def full_htdemucs_kwargs() -> dict:
    """Constructor arguments of the released `htdemucs` (955717e8): 41,984,456 parameters."""
    return dict(bottom_channels=512, dconv_mode=3, segment=Fraction(39, 5))


def build_demucs_repo(
    folder: Path,
    name: str = "htdemucs",
    *,
    kwargs: dict | None = None,
    sources: list[str] | None = None,
    seed: int = 0,
    sig: str | None = None,
    voice_only: bool = False,
) -> Path:
    """Write a random-weight HTDemucs as model `name` into `folder`; return the `.th` file.

    `kwargs` replaces the tiny architecture (pass `full_htdemucs_kwargs()` for a full-size
    one). The model signature defaults to a hash of `name`, so several names can share a folder.
    """
    import torch
    from demucs.htdemucs import HTDemucs
    from demucs.states import get_state, save_with_checksum

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sources = list(sources or SOURCES)
    kwargs = dict(TINY_KWARGS if kwargs is None else kwargs)
    sig = sig or hashlib.sha256(f"{name}:{seed}".encode()).hexdigest()[:8]
    for old in folder.glob(f"{sig}-*.th"):
        old.unlink()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = HTDemucs(sources, **kwargs)
    if voice_only:
        _keep_only_vocals(model, sources)
    package = {
        "klass": HTDemucs,
        "args": (sources,),
        "kwargs": kwargs,
        "state": get_state(model, None, half=True),
    }
    save_with_checksum(package, folder / f"{sig}.th")
    (folder / f"{name}.yaml").write_text(f"models: ['{sig}']\n")
    (path,) = folder.glob(f"{sig}-*.th")
    return path


def _keep_only_vocals(model, sources: list[str]) -> None:
    """Zero the last decoder layers' outputs of every source but the vocals (both the
    spectrogram and the waveform branch; channels are grouped by source), and amplify the
    vocals' so their stem is as loud as a song."""
    import torch

    keep = sources.index("vocals")
    with torch.no_grad():
        for layer in (model.decoder[-1].conv_tr, model.tdecoder[-1].conv_tr):
            per = layer.out_channels // len(sources)
            for i in range(len(sources)):
                part = slice(i * per, (i + 1) * per)
                scale = VOICE_ONLY_GAIN if i == keep else 0.0
                layer.weight[:, part] *= scale  # (in, out, kernel...) for a transposed conv
                if layer.bias is not None:
                    layer.bias[part] *= scale


def demucs_reference(model_dir: Path, name: str, audio) -> dict:
    """What Demucs's own Separator computes, as arrays by source: normalise the mix, fp32
    `apply_model` (shifts=0, overlap=0.25), denormalise. The yardstick for our separation."""
    import torch
    from demucs.apply import apply_model
    from demucs.pretrained import get_model

    model = get_model(name, repo=Path(model_dir))
    wav = torch.from_numpy(audio)
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    with torch.inference_mode():
        out = apply_model(model, ((wav - mean) / std)[None], shifts=0, overlap=0.25)
    out = (out[0] * std + mean).numpy()
    return dict(zip(model.sources, out, strict=True))
