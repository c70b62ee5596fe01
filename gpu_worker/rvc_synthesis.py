"""The numerics of voice conversion: rvc-next's offline conversion, arranged for speed and
exact alignment (`convert_16k`).

It owns cutting long audio into pieces at quiet frames (`plan_pieces`), pitch over the whole
file, content features with index blend and consonant protection, the synthesizer's decoder in
windows, resampling, and the precision rule (`default_precision`: bf16 autocast on CPUs that
compute bf16 in hardware).

Alignment and speed: `convert_16k` runs rvc-next's offline conversion from its engine parts
(pitch detector, HuBERT, index blend, synthesizer) rather than through its `OfflineConverter`,
which returns 5-30 ms less audio than it is given and, on long audio, can lose a 10 ms frame at
its own chunk joins. Pitch is detected once over the whole file; long audio is cut at quiet
10 ms frames into pieces whose features see one second of real context on each side, while
the synthesizer's decoder (nine tenths of the work) renders only the piece plus a few frames.
The output has the input's sample rate and exactly its number of samples, with the converted
(mono) voice copied to each input channel. What remains is rvc-next's own sub-frame offset: the
voice's pitch contour sits 0-5 ms after the input's (measured with pm and SwiftF0). On CPUs
with native bf16, HuBERT and the synthesizer run under bf16 autocast (`precision`): 1.8x faster
at full size, 48.8 dB SNR from fp32. The synthesizer's noise is seeded, so a conversion is
repeatable. With the noise switched off, this path and `OfflineConverter` agree to 83-87 dB (the
int16 limit) away from the file's ends. Measured on 2 CPU cores, 60 s of vocal, full-size models
(bench/cover.py): 16.5 s, against 66 s through `OfflineConverter`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpu_worker import cancel
from gpu_worker.errors import BadOptions, ModelMissing
from gpu_worker.rvc_runtime import engine_errors
from gpu_worker.voice_params import VoiceParams

logger = logging.getLogger(__name__)

SR_16K = 16000
FRAME = 160  # rvc-next's 10 ms pitch/feature frame at 16 kHz
CONTEXT = SR_16K  # 1 s of real audio on each side of every piece
TAIL = SR_16K // 10  # headroom kept under the runtime's chunk limit when planning pieces
SILENCE_PEAK = 1e-4  # -80 dBFS: a piece this quiet is not converted, it stays silent
DECODER_MARGIN = 10  # frames the decoder renders past each side of a piece (its reach is 8)
DECODER_WINDOW = 300  # frames per decoder call (3 s): long calls page-fault on big buffers
FLOW_REACH = 24  # frames of context the flow gets before the decoded span (as rvc-next's infer)
SEED = 1234  # the synthesizer's noise, seeded per piece so a conversion is repeatable
PRECISIONS = ("auto", "fp32", "bf16")


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Zero-phase polyphase resampling (no delay), float32."""
    if sr_in == sr_out or x.shape[-1] == 0:
        return x.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(sr_in, sr_out)
    return resample_poly(x, sr_out // g, sr_in // g, axis=-1).astype(np.float32)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """`x` cut or zero-padded at the end to exactly `n` samples."""
    if x.shape[-1] >= n:
        return x[..., :n]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


def plan_pieces(
    n: int, max_piece: int, search: int, audio: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """Cut `n` samples (16 kHz) into pieces of at most `max_piece`, at the quietest 10 ms frame
    within `search` samples before each limit. Boundaries fall on 10 ms frames."""
    bounds = [0]
    start = 0
    while n - start > max_piece:
        hi = start + max_piece // FRAME * FRAME
        lo = max(start + FRAME, hi - search // FRAME * FRAME)
        cut = hi
        if audio is not None and hi > lo:
            frames = np.abs(audio[lo:hi]).reshape(-1, FRAME).sum(axis=1)
            cut = lo + int(np.argmin(frames)) * FRAME
        bounds.append(cut)
        start = cut
    bounds.append(n)
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def default_precision(device: str = "cpu") -> str:
    """`bf16` on a CPU that computes bf16 in hardware (AVX512-BF16 or AMX), else `fp32`.

    With emulated bf16 autocast is slower than fp32. On a GPU `fp32` leaves rvc-next's own rule
    in charge (fp16 on most cards)."""
    from gpu_worker.cpu import cpu_has_native_bf16

    if str(device or "cpu").startswith("cpu") and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def _resolve_precision(precision: str, device: Any, net_g: Any = None) -> str:
    """`auto` is `default_precision(device)` for a real-size voice. Small synthesizers (the
    tiny test models) run about 3x slower under bf16 autocast than in fp32, so they keep fp32."""
    if precision not in PRECISIONS:
        raise BadOptions("precision", value=str(precision)[:20], allowed=list(PRECISIONS))
    if precision != "auto":
        return precision
    conv_pre = getattr(getattr(net_g, "dec", None), "conv_pre", None)
    if net_g is not None and getattr(conv_pre, "out_channels", 512) < 256:
        return "fp32"
    return default_precision(str(device))


def _autocast(device: Any, precision: str) -> Any:
    import contextlib

    import torch

    if precision != "bf16":
        return contextlib.nullcontext()
    kind = str(getattr(device, "type", None) or device).split(":", 1)[0]
    return torch.autocast(kind if kind in ("cpu", "cuda", "xpu") else "cpu", dtype=torch.bfloat16)


def _use_all_cpus(device: Any) -> None:
    """Give torch every CPU this process may use (affinity and cgroup quota), once."""
    import torch

    from gpu_worker.cpu import available_cpus

    if str(device).startswith("cpu") and torch.get_num_threads() != available_cpus():
        torch.set_num_threads(available_cpus())


_FOLD_LOCK = threading.Lock()


def _fold_weight_norm(net_g: Any) -> None:
    """Bake the synthesizer's weight normalisation into plain weights, once per loaded voice.

    Weight norm recomputes every normalised weight on every call, and the decoder is called once
    per window; the folded weights give the same output (to float rounding)."""
    with _FOLD_LOCK:
        if getattr(net_g, "_encore_folded", False):
            return
        try:
            net_g.remove_weight_norm()
        except (ValueError, AttributeError, RuntimeError):  # already plain, or another layout
            logger.debug("Synthesizer weight norm left as is", exc_info=True)
        net_g._encore_folded = True


@dataclass(frozen=True)
class _Pitch:
    coarse: Any  # (1, frames) long tensor, or None for a voice without pitch guidance
    hz: Any  # (1, frames) float tensor, or None


def _pitch(runtime: Any, padded: np.ndarray, params: VoiceParams, device: Any) -> _Pitch:
    """rvc-next's offline pitch over the whole (padded) file at once, as its own converter does:
    detector, unvoiced frames interpolated, shifted by `pitch` semitones, quantised."""
    import torch
    from rvc_next.engine.f0.base import offline_f0

    frames = padded.shape[0] // FRAME
    track = offline_f0(runtime.f0(params.engine_f0_method), padded, frames, float(params.pitch))
    coarse, hz = np.asarray(track.coarse), np.asarray(track.hz, dtype=np.float32)
    if coarse.shape[0] < frames:  # no detector does this; keep indexing safe if one does
        coarse = np.pad(coarse, (0, frames - coarse.shape[0]), mode="edge")
        hz = np.pad(hz, (0, frames - hz.shape[0]), mode="edge")
    return _Pitch(
        torch.from_numpy(coarse[:frames].astype(np.int64)).unsqueeze(0).to(device),
        torch.from_numpy(np.ascontiguousarray(hz[:frames])).unsqueeze(0).to(device),
    )


def _features(
    runtime: Any,
    hubert: Any,
    voice: Any,
    index: Any,
    params: VoiceParams,
    seg: np.ndarray,
    pitchf: Any,
) -> Any:
    """Content features of `seg` at 10 ms frames, index-blended and protected as rvc-next does."""
    import torch
    import torch.nn.functional as F
    from rvc_next.engine.features.hubert import extract_features
    from rvc_next.engine.index.retrieval import blend

    source = torch.from_numpy(seg).view(1, -1).to(runtime.device, runtime.dtype)
    feats = extract_features(hubert, source, voice.version).to(runtime.dtype)
    protect = pitchf is not None and params.protect < 0.5
    feats0 = feats.clone() if protect else None
    if index is not None and params.index_rate > 0:
        found = blend(feats[0].float().cpu().numpy(), index)
        found = torch.from_numpy(np.asarray(found, np.float32)).unsqueeze(0)
        rate = float(params.index_rate)
        feats = found.to(feats.device, feats.dtype) * rate + (1 - rate) * feats
    feats = F.interpolate(feats.permute(0, 2, 1), scale_factor=2).permute(0, 2, 1)
    if feats0 is None:
        return feats
    feats0 = F.interpolate(feats0.permute(0, 2, 1), scale_factor=2).permute(0, 2, 1)
    frames = min(feats.shape[1], pitchf.shape[1])
    # Unvoiced frames (0 Hz) keep `protect` of the converted features: consonants stay clear.
    weight = torch.where(pitchf[:, :frames] > 0, 1.0, float(params.protect))
    weight = weight.unsqueeze(-1).to(feats.dtype)
    mixed = feats[:, :frames] * weight + feats0[:, :frames] * (1 - weight)
    return mixed.to(feats0.dtype)


def _synthesize(
    net_g: Any,
    feats: Any,
    coarse: Any,
    hz: Any,
    sid: Any,
    head: int,
    length: int,
    margin: int,
    upp: int,
) -> np.ndarray:
    """Frames `head .. head + length` of the voice, as rvc-next's `infer(..., skip_head,
    return_length)` renders them: the prior and flow over the whole window (the flow from
    `FLOW_REACH` frames before `head`), the decoder (`upp` samples a frame) over the requested
    frames only, in windows of `DECODER_WINDOW` frames, each with `margin` frames on both sides
    that are dropped. Windows bound memory and, with glibc's allocator, run 1.8x faster than one
    long call. The decoder's sine source starts its phase at zero on every call: each window's
    first (dropped) frame gets the pitch that carries the phase on exactly, so the windows add
    up to one call over all frames (to float rounding)."""
    import torch

    g = net_g.emb_g(sid).unsqueeze(-1)
    lengths = torch.tensor([feats.shape[1]], device=feats.device)
    flow_head = max(head - FLOW_REACH, 0)
    m_p, logs_p, x_mask = net_g.enc_p(feats, coarse, lengths, flow_head)
    z_p = (m_p + torch.exp(logs_p) * torch.randn_like(m_p) * 0.66666) * x_mask
    z = net_g.flow(z_p, x_mask, g=g, reverse=True) * x_mask
    z = z[:, :, head - flow_head : head - flow_head + length]
    dec = net_g.dec
    f0 = hz[:, head : head + length] if hz is not None else None
    if f0 is not None:
        rate = float(dec.m_source.l_sin_gen.sampling_rate)
        # The sine source's phase after each frame (cycles), as it accumulates it.
        phase = torch.cumsum(torch.fmod(f0[0].double() * upp / rate + 0.5, 1.0) - 0.5, 0)
    out = np.zeros(length * upp, np.float32)
    # Windows need a margin past the decoder's reach (8 frames); without one, decode in one go.
    step = DECODER_WINDOW if margin >= DECODER_MARGIN else max(length, 1)
    for start in range(0, length, step):
        cancel.checkpoint()  # a window takes a fraction of a second: stop between two
        lo, hi = max(0, start - margin), min(length, start + step + margin)
        if f0 is None:
            y = dec(z[:, :, lo:hi], g=g)
        else:
            window = f0[:, lo:hi].clone()
            if lo > 0:
                window[0, 0] = float(torch.remainder(phase[lo], 1.0)) * rate / upp
            y = dec(z[:, :, lo:hi], window, g=g)
        keep = min(step, length - start) * upp
        skip = (start - lo) * upp
        out[start * upp : start * upp + keep] = y[0, 0, skip : skip + keep].float().cpu().numpy()
    return out


def convert_16k(
    audio_16k: np.ndarray,
    runtime: Any,
    voice: Any,
    index: Any,
    params: VoiceParams,
    progress: Callable[[float], None] | None = None,
    *,
    context: int = CONTEXT,
    precision: str = "auto",
) -> tuple[np.ndarray, int]:
    """Convert 16 kHz mono float audio; return float32 at the voice's rate, aligned with the
    input and exactly `len(audio_16k) * rate / 16000` samples (rounded) long.

    This is rvc-next's offline conversion, arranged for speed and exact alignment. Pitch is
    detected once over the whole file (reflect-padded as rvc-next pads); audio longer than the
    runtime's chunk limit is cut into pieces at quiet 10 ms frames; each piece's content
    features and prior see `context` samples of real audio on both sides, but the synthesizer's
    decoder (nine tenths of the work) renders only the piece plus `DECODER_MARGIN` frames, more
    than its receptive field, which are dropped. The loudness envelope mix and the output peak
    rule then apply to the whole file at once. `precision` is `auto`, `fp32` or `bf16` (autocast
    of HuBERT and the synthesizer; see `default_precision`). The synthesizer's noise is seeded,
    so the same input gives the same output.
    """
    import torch
    from rvc_next.engine.audio.dsp import change_rms, highpass_16k

    x = np.nan_to_num(np.asarray(audio_16k, dtype=np.float32).reshape(-1))
    n = x.shape[0]
    rate = int(voice.tgt_sr)
    total = round(n * rate / SR_16K)
    out = np.zeros(total, np.float32)
    if n == 0 or float(np.abs(x).max()) < SILENCE_PEAK:
        if progress is not None:
            progress(1.0)
        return out, rate
    peak = float(np.abs(x).max())
    if peak > 0.95:  # rvc-next scales each call's input to a 0.95 peak: do it once, for the file
        x = x * np.float32(0.95 / peak)
    device = runtime.device
    precision = _resolve_precision(precision, device, voice.net_g)
    _use_all_cpus(device)
    net_g = voice.net_g
    _fold_weight_norm(net_g)
    upp = rate // 100  # output samples per 10 ms frame
    context = max(0, context) // FRAME * FRAME
    margin = min(DECODER_MARGIN, context // FRAME)
    pad = max(SR_16K, context + (margin + 4) * FRAME)
    x = np.asarray(highpass_16k(x), dtype=np.float32)
    padded = np.pad(x, (pad, pad), mode="reflect").astype(np.float32)

    missing_asset, _ = engine_errors()
    try:
        hubert = runtime.hubert(voice.embedder)
        pitch = _pitch(runtime, padded, params, device) if voice.if_f0 else _Pitch(None, None)
    except missing_asset as e:
        raise ModelMissing("voice_models", detail=str(e)[:300]) from e
    if progress is not None:
        progress(0.1)

    t_max = runtime.chunk.x_max * SR_16K
    max_piece = max(SR_16K, t_max - FRAME - 2 * context - TAIL)
    search = min(2 * runtime.chunk.x_query * SR_16K, max_piece // 2)
    pieces = plan_pieces(n, max_piece, search, x)
    sid = torch.tensor([0], device=device, dtype=torch.long)
    with torch.inference_mode(), torch.random.fork_rng(devices=[]):
        for i, (a, b) in enumerate(pieces):
            cancel.checkpoint()
            first, last = round(a * rate / SR_16K), round(b * rate / SR_16K)
            lo = a + pad - context  # window in `padded`, whole frames from a piece's start
            hi = min(padded.shape[0], b + pad + context + (margin + 3) * FRAME)
            seg = padded[lo:hi]
            if float(np.abs(seg).max()) < SILENCE_PEAK:
                continue
            torch.manual_seed(SEED + i)
            f0 = lo // FRAME
            with _autocast(device, precision):
                hz = pitch.hz[:, f0 : f0 + seg.shape[0] // FRAME] if voice.if_f0 else None
                feats = _features(runtime, hubert, voice, index, params, seg, hz)
                frames = min(feats.shape[1], seg.shape[0] // FRAME)
                head = context // FRAME - margin
                length = min(-(-(b - a) // FRAME) + 2 * margin, frames - head)
                coarse = pitch.coarse[:, f0 : f0 + frames] if hz is not None else None
                hz = hz[:, :frames] if hz is not None else None
                y = _synthesize(
                    net_g, feats[:, :frames], coarse, hz, sid, head, length, margin, upp
                )
            y = y[margin * upp : margin * upp + last - first]
            out[first : first + y.shape[0]] = y
            if progress is not None:
                progress(0.1 + 0.9 * (i + 1) / len(pieces))
    if params.rms_mix != 1:
        out = change_rms(x, SR_16K, out, rate, float(params.rms_mix)).astype(np.float32)
    top = float(np.abs(out).max())
    if top > 0.99:  # rvc-next's output rule (it then stores int16; this keeps float)
        out *= np.float32(0.99 / top)
    if progress is not None:
        progress(1.0)
    return out, rate
