"""Exporting a generator checkpoint as the small-model voice `.pth` every RVC tool reads.

Encore's demo voice is the v2 40k base generator, exported with `export_voice`.
"""

from __future__ import annotations

from pathlib import Path

from gpu_worker.errors import BadVoice


def export_voice(
    generator: Path,
    dst: Path,
    *,
    sample_rate: str = "40k",
    version: str = "v2",
    info: str = "",
    config: list | None = None,
) -> Path:
    """Export generator checkpoint `generator` (`{"model": state}`) as a voice at `dst`.

    `config` replaces the standard config of `sample_rate`/`version` (for non-standard sizes).
    """
    from collections import OrderedDict

    from rvc_next.engine.models import checkpoint as ckpt
    from rvc_next.engine.models.extract import config_for

    data = ckpt.torch_load(generator)
    if not ckpt.is_g_checkpoint(data):
        raise BadVoice("not_generator", name=Path(generator).name)
    state = ckpt.legacy_weight_norm(data["model"])
    weight = OrderedDict((k, v.half()) for k, v in state.items() if "enc_q" not in k)
    model = ckpt.SmallModel(
        weight=weight,
        config=list(config) if config is not None else config_for(sample_rate, version),
        info=info or "Exported by Encore",
        sr=sample_rate,
        pitch_guidance=True,
        version=version,
        speaker_info=ckpt.normalize_speaker_info(None),
    )
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".part-{dst.name}")
    try:
        ckpt.write_small_model(model, tmp)
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst
