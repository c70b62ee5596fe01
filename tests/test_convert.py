"""Voice conversion on tiny random-weight assets, through rvc-next's real loaders and inference.

Nothing is mocked: the assets are real files in the real formats, and every conversion runs
HuBERT, a pitch extractor, the index blend and the synthesizer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gpu_worker import convert as vc
from gpu_worker import rvc_synthesis as syn
from gpu_worker.errors import BadVoice, EngineError, ModelMissing
from tests.hostile import code_running_pth
from tests.tiny_rvc import RvcAssets, build_hubert, build_rvc_assets
from tests.wording import refused, said


@pytest.fixture(scope="module")
def rvc(tmp_path_factory) -> RvcAssets:
    return build_rvc_assets(tmp_path_factory.mktemp("rvc"))


def sung(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A harmonic 'voice' whose pitch wanders (vibrato plus slow glides), (channels, samples)."""
    t = np.arange(int(seconds * sr)) / sr
    semis = 4 * np.sin(2 * np.pi * 0.7 * t + seed) + 3 * np.sin(2 * np.pi * 1.9 * t)
    semis += 0.5 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(220 * 2 ** (semis / 12)) / sr
    x = sum(0.2 / k * np.sin(k * phase) for k in range(1, 6))
    return np.stack([x] * channels).astype(np.float32)


def write(path: Path, audio: np.ndarray, sr: int) -> Path:
    sf.write(path, audio.T, sr, subtype="FLOAT")
    return path


def run(rvc: RvcAssets, src: Path, out: Path, index: bool = True, **params) -> np.ndarray:
    vc.convert(
        src,
        out,
        voice_pth=rvc.voice_pth,
        index_path=rvc.index_path if index else None,
        assets_dir=rvc.assets_dir,
        params=vc.VoiceParams(**params),
    )
    data, _ = sf.read(out, dtype="float32", always_2d=True)
    return data.T


def pitch_lag_ms(x: np.ndarray, y: np.ndarray, sr: int, semitones: int = 0) -> tuple[int, float]:
    """The shift (ms) of y's pitch contour that best matches x's raised by `semitones`, and the
    mean squared log-pitch error there."""
    import parselmouth

    def contour(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sound = parselmouth.Sound(a.astype(np.float64), sr)
        p = sound.to_pitch_ac(time_step=0.001, pitch_floor=60, pitch_ceiling=1500)
        f = p.selected_array["frequency"]
        return p.xs(), np.log(np.where(f > 0, f, np.nan))

    tx, fx = contour(x)
    ty, fy = contour(y)
    grid = np.arange(0.15, len(x) / sr - 0.15, 0.001)
    gx = np.interp(grid, tx, fx) + semitones / 12 * np.log(2)
    best = (0, np.inf)
    for lag in range(-40, 41):
        gy = np.interp(grid + lag / 1000, ty, fy)
        ok = np.isfinite(gx) & np.isfinite(gy)
        if ok.mean() > 0.8:
            err = float(np.mean((gx[ok] - gy[ok]) ** 2))
            best = min(best, (lag, err), key=lambda b: b[1])
    return best


@pytest.mark.parametrize(
    ("method", "sr", "channels"),
    [("swiftf0", 44100, 2), ("pm", 48000, 1), ("rmvpe", 32000, 2)],
)
def test_convert_keeps_rate_length_and_channels(rvc, tmp_path, method, sr, channels):
    src = write(tmp_path / "vocals.wav", sung(0.7, sr, channels), sr)
    out = run(rvc, src, tmp_path / "converted.wav", f0_method=method)
    info = sf.info(str(tmp_path / "converted.wav"))
    assert info.samplerate == sr
    assert info.frames == sf.info(str(src)).frames
    assert info.channels == channels and info.subtype == "FLOAT"
    assert np.isfinite(out).all() and np.abs(out).max() > 0.01
    assert np.array_equal(out[0], out[-1])  # the mono voice on every channel


def test_output_follows_the_pitch_knob_and_stays_aligned(rvc, tmp_path):
    sr = 44100
    x = sung(1.5, sr)
    src = write(tmp_path / "vocals.wav", x, sr)
    up = run(rvc, src, tmp_path / "up.wav", index=False, f0_method="pm", pitch=12, rms_mix=1.0)
    lag, err = pitch_lag_ms(x[0], up[0], sr, semitones=12)
    assert err < 0.01  # an octave up, note for note (log-pitch error under 10 %)
    assert abs(lag) <= 10  # and in time with the input


def test_long_audio_is_cut_without_drift(rvc):
    """rvc-next loses a 10 ms frame at some of its own chunk joins; ours keep every piece exact."""
    from rvc_next.engine.runtime import ChunkConfig, Runtime

    runtime = Runtime(rvc.assets_dir, device="cpu")
    runtime.chunk = ChunkConfig(x_pad=1, x_query=1, x_center=2, x_max=2)
    voice = runtime.voice(rvc.voice_pth)
    x = sung(4.5, 16000, seed=2)[0]
    context = 4000
    pieces = vc.plan_pieces(len(x), 2 * 16000 - 160 - 2 * context - syn.TAIL, 16000, x)
    assert len(pieces) >= 3
    params = vc.VoiceParams(f0_method="pm", index_rate=0, rms_mix=1.0, protect=0.5)
    y, rate = vc.convert_16k(x, runtime, voice, None, params, context=context)
    assert rate == 40000 and len(y) == len(x) * 40000 // 16000
    y16 = syn.resample(y, rate, 16000)
    for a, b in pieces:  # each piece (and the join before it) in time with the input
        lo, hi = max(0, a - 8000), min(len(x), b + 8000)
        lag, err = pitch_lag_ms(x[lo:hi], y16[lo:hi], 16000)
        assert abs(lag) <= 7 and err < 0.01, (a, lag, err)


def test_plan_pieces_cuts_at_the_quietest_frame():
    x = np.ones(10_000, np.float32)
    x[3_200:3_360] = 0  # one silent 10 ms frame before the 4000-sample limit
    pieces = vc.plan_pieces(len(x), 4_000, 2_000, x)
    assert pieces[0] == (0, 3_200)
    assert pieces[-1][1] == len(x)
    assert all(b - a <= 4_000 for a, b in pieces)
    assert all(p[1] == q[0] for p, q in zip(pieces, pieces[1:], strict=False))
    assert vc.plan_pieces(500, 4_000, 2_000, None) == [(0, 500)]


def test_models_stay_loaded_between_calls(rvc, tmp_path):
    src = write(tmp_path / "vocals.wav", sung(0.5, 44100), 44100)
    run(rvc, src, tmp_path / "a.wav", f0_method="pm")
    runtime = vc.engine_runtime(rvc.assets_dir, "cpu")
    voice, index = runtime.voice(rvc.voice_pth), runtime.index(rvc.index_path)
    hubert = runtime.hubert()
    run(rvc, src, tmp_path / "b.wav", f0_method="pm")
    assert vc.engine_runtime(rvc.assets_dir, "cpu") is runtime
    assert runtime.voice(rvc.voice_pth) is voice
    assert runtime.index(rvc.index_path) is index
    assert runtime.hubert() is hubert


def test_silence_and_tiny_inputs(rvc, tmp_path):
    silent = run(
        rvc,
        write(tmp_path / "s.wav", np.zeros((2, 44100), np.float32), 44100),
        tmp_path / "s_out.wav",
    )
    assert silent.shape == (2, 44100) and not silent.any()
    for n in (0, 1, 300):
        audio = 0.3 * np.sin(np.arange(n, dtype=np.float32))[None, :]
        out = run(
            rvc,
            write(tmp_path / f"t{n}.wav", audio, 44100),
            tmp_path / f"t{n}_out.wav",
            f0_method="pm",
        )
        assert out.shape == (1, n) and np.isfinite(out).all()


def test_inspect_voice_reads_a_good_voice(rvc):
    info = vc.inspect_voice(rvc.voice_pth)
    assert (info.version, info.sample_rate, info.f0, info.embedder) == (
        "v2",
        40000,
        True,
        "contentvec",
    )
    assert info.speakers == 109


def test_a_pickle_that_runs_code_is_refused_and_not_run(tmp_path):
    import torch

    marker = tmp_path / "pwned"
    evil = code_running_pth(tmp_path / "evil.pth", marker)
    with refused(BadVoice, match="could run code"):
        vc.inspect_voice(evil)
    assert not marker.exists()
    # The payload is real: an unsafe load would have run it.
    torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty"),
        (b"not a model at all", "not a PyTorch model"),
        ({"model": {"dec.conv_pre.weight": np.zeros(1)}}, "training checkpoint"),
        ({"state_dict": {}}, "not an RVC voice"),
        ({"weight": {}, "config": [1, 2]}, "damaged config"),
    ],
)
def test_inspect_voice_refuses_other_files(tmp_path, content, match):
    import torch

    path = tmp_path / "voice.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        tensors = {k: torch.as_tensor(v) for k, v in content.get("model", {}).items()}
        content = {**content, "model": tensors} if "model" in content else content
        torch.save(content, path)
    with refused(BadVoice, match=match) as err:
        vc.inspect_voice(path)
    assert said(err.value).endswith(".") and "\n" not in said(err.value)


def test_bad_voice_or_index_in_convert(rvc, tmp_path):
    import faiss

    src = write(tmp_path / "v.wav", sung(0.3, 44100), 44100)
    g = rvc.assets_dir / "pretrained_v2" / "f0G40k.pth"
    with refused(BadVoice, match="training checkpoint"):
        vc.convert(src, tmp_path / "o.wav", voice_pth=g, index_path=None, assets_dir=rvc.assets_dir)
    v1_vectors = np.random.default_rng(0).standard_normal((80, 256)).astype(np.float32)
    v1_index = faiss.index_factory(256, "IVF2,Flat")
    v1_index.train(v1_vectors)
    v1_index.add(v1_vectors)
    faiss.write_index(v1_index, str(tmp_path / "added_v1.index"))
    with refused(BadVoice, match="another voice"):
        vc.convert(
            src,
            tmp_path / "o.wav",
            voice_pth=rvc.voice_pth,
            index_path=tmp_path / "added_v1.index",
            assets_dir=rvc.assets_dir,
            params=vc.VoiceParams(f0_method="pm"),
        )


def test_missing_assets_name_the_download_command(rvc, tmp_path):
    src = write(tmp_path / "v.wav", sung(0.3, 44100), 44100)
    empty = tmp_path / "empty-assets"
    empty.mkdir()
    with refused(ModelMissing, match="encore models download") as err:
        vc.convert(
            src,
            tmp_path / "o.wav",
            voice_pth=rvc.voice_pth,
            index_path=None,
            assets_dir=empty,
            params=vc.VoiceParams(f0_method="pm"),
        )
    assert "hubert_base" in said(err.value)
    no_rmvpe = tmp_path / "no-rmvpe"
    build_hubert(no_rmvpe)
    with refused(ModelMissing, match="encore models download") as err:
        vc.check_assets(no_rmvpe, "rmvpe")
    assert "rmvpe.pt" in said(err.value)
    vc.check_assets(no_rmvpe, "swiftf0")  # SwiftF0 ships in the wheel, pm needs nothing
    vc.check_assets(rvc.assets_dir, "rmvpe", training=True)


def test_required_assets_layout(tmp_path):
    rel = [
        str(p.relative_to(tmp_path)) for p in vc.required_assets(tmp_path, "rmvpe", training=True)
    ]
    assert rel == [
        "hubert_base/config.json",
        "hubert_base/pytorch_model.bin",
        "rmvpe/rmvpe.pt",
        "pretrained_v2/f0G40k.pth",
        "pretrained_v2/f0D40k.pth",
    ]
    assert len(vc.required_assets(tmp_path, "pm")) == 2
    assert vc.asset_ids(("rmvpe",), training=True) == ["hubert", "rmvpe", "pretrained-v2-40k"]


def test_tiny_base_models_are_what_rvc_next_expects(rvc):
    from rvc_next.engine.models.checkpoint import inspect_checkpoint

    g = inspect_checkpoint(rvc.assets_dir / "pretrained_v2" / "f0G40k.pth")
    d = inspect_checkpoint(rvc.assets_dir / "pretrained_v2" / "f0D40k.pth")
    assert (g.kind, g.version, g.sample_rate, g.pitch_guidance) == ("G", "v2", "40k", True)
    assert (d.kind, d.version) == ("D", "v2")


def test_voice_params_are_validated():
    assert vc.VoiceParams(f0_method="swiftf0").engine_f0_method == "swift"
    for bad in ({"pitch": 25}, {"pitch": 1.5}, {"f0_method": "harvest"}, {"index_rate": 2},
                {"protect": 0.6}, {"rms_mix": -0.1}, {"filter_radius": 9}):  # fmt: skip
        with pytest.raises(EngineError):
            vc.VoiceParams(**bad)


def test_download_failure_is_one_clear_sentence(tmp_path):
    import httpx

    transport = httpx.MockTransport(lambda request: httpx.Response(404))
    seen = []
    with refused(EngineError, match="Downloading the voice models failed") as err:
        vc.download_assets(
            tmp_path / "assets",
            lambda f, msg: seen.append(msg),
            transport=transport,
            training=False,
        )
    assert "\n" not in said(err.value)
    assert any("huggingface.co" in m for m in seen)
    assert not any(p.is_file() for p in (tmp_path / "assets").rglob("*"))


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - test.astype(np.float64)) ** 2)))


def test_bf16_agrees_with_fp32(rvc):
    """bf16 autocast (HuBERT and synthesizer) against fp32, same seeded noise: measured 44 dB on
    the tiny model, 48-49 dB on the full-size one (bench/cover.py)."""
    runtime = vc.engine_runtime(rvc.assets_dir, "cpu")
    voice, index = runtime.voice(rvc.voice_pth), runtime.index(rvc.index_path)
    x = sung(2.0, 16000, seed=3)[0]
    params = vc.VoiceParams(f0_method="pm")
    fp32, rate = vc.convert_16k(x, runtime, voice, index, params, precision="fp32")
    bf16, _ = vc.convert_16k(x, runtime, voice, index, params, precision="bf16")
    assert rate == 40000 and fp32.shape == bf16.shape == (len(x) * 40000 // 16000,)
    assert bf16.dtype == np.float32 and np.abs(fp32).max() > 0.01
    assert snr_db(fp32, bf16) > 38


def test_conversion_is_repeatable(rvc):
    """The synthesizer's noise is seeded: the same input converts to the same samples."""
    runtime = vc.engine_runtime(rvc.assets_dir, "cpu")
    voice = runtime.voice(rvc.voice_pth)
    x = sung(1.0, 16000, seed=4)[0]
    params = vc.VoiceParams(f0_method="pm", index_rate=0)
    a, _ = vc.convert_16k(x, runtime, voice, None, params)
    b, _ = vc.convert_16k(x, runtime, voice, None, params)
    assert np.array_equal(a, b)


def test_precision_choice(rvc, tmp_path):
    from gpu_worker.cpu import cpu_has_native_bf16

    assert vc.default_precision("cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert vc.default_precision("cuda:0") == "fp32"  # rvc-next's own fp16/fp32 rule applies
    src = write(tmp_path / "v.wav", sung(0.3, 44100), 44100)
    with refused(EngineError, match="precision"):
        vc.convert(
            src,
            tmp_path / "o.wav",
            voice_pth=rvc.voice_pth,
            index_path=None,
            assets_dir=rvc.assets_dir,
            precision="fp16",
        )
    out = tmp_path / "fp32.wav"
    vc.convert(
        src,
        out,
        voice_pth=rvc.voice_pth,
        index_path=None,
        assets_dir=rvc.assets_dir,
        params=vc.VoiceParams(f0_method="pm"),
        precision="fp32",
    )
    assert sf.info(str(out)).frames == sf.info(str(src)).frames


def test_decoder_renders_only_the_piece_plus_its_margin(rvc):
    """Context feeds the features; the decoder (the expensive part) sees the piece and a margin,
    in windows of DECODER_WINDOW frames that overlap by a margin on each side."""
    runtime = vc.engine_runtime(rvc.assets_dir, "cpu")
    voice = runtime.voice(rvc.voice_pth)
    seen = []
    hook = voice.net_g.dec.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    x = sung(4.5, 16000, seed=5)[0]
    params = vc.VoiceParams(f0_method="pm", index_rate=0)
    try:
        y, _ = vc.convert_16k(x, runtime, voice, None, params)
    finally:
        hook.remove()
    span = len(x) // syn.FRAME + 2 * syn.DECODER_MARGIN  # 470 frames: two windows
    w, m = syn.DECODER_WINDOW, syn.DECODER_MARGIN
    assert [shape[-1] for shape in seen] == [w + m, span - w + m]
    assert len(y) == len(x) * 40000 // 16000


def test_windowed_decoding_equals_one_call(rvc, monkeypatch):
    """Each window's first (dropped) frame carries the sine source's phase on, so cutting the
    decoder's work into windows changes nothing (checked with the voiced noise switched off)."""
    import torch

    runtime = vc.engine_runtime(rvc.assets_dir, "cpu")
    net_g = runtime.voice(rvc.voice_pth).net_g
    frames, head, length = 400, 30, 330
    t = torch.arange(frames) / 100
    hz = (220 * 2 ** (4 * torch.sin(2 * torch.pi * 0.7 * t) / 12)).float()[None]
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(1, frames, 768, generator=gen)
    coarse = torch.randint(1, 255, (1, frames), generator=gen)
    sid = torch.tensor([0])
    monkeypatch.setattr(net_g.dec.m_source.l_sin_gen, "noise_std", 0.0)

    def render(window: int) -> np.ndarray:
        monkeypatch.setattr(syn, "DECODER_WINDOW", window)
        torch.manual_seed(0)
        with torch.inference_mode():
            return syn._synthesize(
                net_g, feats, coarse, hz, sid, head, length, syn.DECODER_MARGIN, 400
            )

    whole, windowed = render(10_000), render(37)
    assert whole.shape == windowed.shape == (length * 400,)
    assert snr_db(whole, windowed) > 100


def test_a_voice_without_pitch_guidance(rvc, tmp_path):
    """Speech voices trained without pitch (f0 = 0) convert through the plain HiFi-GAN decoder."""
    import torch
    from rvc_next.engine.models.synthesizer import SynthesizerTrnMs768NSFsid_nono

    from tests.tiny_rvc import FILTER_LENGTH, SEGMENT_FRAMES, TINY_MODEL, small_config

    torch.manual_seed(6)
    net_g = SynthesizerTrnMs768NSFsid_nono(
        FILTER_LENGTH // 2 + 1, SEGMENT_FRAMES, **TINY_MODEL, is_half=False, sr="40k"
    )
    weight = {k: v.half() for k, v in net_g.state_dict().items() if "enc_q" not in k}
    pth = tmp_path / "speech.pth"
    torch.save(
        {"weight": weight, "config": small_config(), "info": "", "sr": "40k", "f0": 0,
         "version": "v2"},
        pth,
    )  # fmt: skip
    assert vc.inspect_voice(pth).f0 is False
    src = write(tmp_path / "v.wav", sung(3.6, 44100), 44100)
    vc.convert(
        src, tmp_path / "o.wav", voice_pth=pth, index_path=rvc.index_path,
        assets_dir=rvc.assets_dir,
    )  # fmt: skip
    out, rate = sf.read(tmp_path / "o.wav", dtype="float32", always_2d=True)
    assert rate == 44100 and out.shape[0] == sf.info(str(src)).frames
    assert np.isfinite(out).all() and np.abs(out).max() > 0.001
