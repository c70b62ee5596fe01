"""What an untrusted RVC voice may be: its config, its tensors and its faiss index, checked
before anything is built or read from them.

A voice's `config` decides how large the synthesizer is when a cover is made, and a faiss
`.index` header decides how much faiss allocates when it reads the file (faiss trusts it). So
a community file is accepted only when:

- its config is an RVC geometry: v1 (256-dim features) or v2 (768), 32/40/48 kHz with upsample
  rates whose product is that rate's hop and kernel sizes that fit them, and every size at most
  the real models' (`MAXIMA`). Smaller consistent configs (the tests' tiny voices) pass;
- every tensor has exactly the name and shape that config implies (nothing missing, nothing
  extra), a float dtype, and the total parameter count stays under `MAX_PARAMS`;
- its index is a faiss IVF-Flat index over an L2 flat quantizer ("IwFl" / "IxF2" / "ilar"),
  the kind RVC writes, of the voice's feature dimension, whose header walks to exactly the
  file's size with every count bounded. The walk reads headers only and seeks past the data.

Nothing here imports torch, faiss or the engine: callers pass tensor shapes and dtype names.
Every refusal is a `BadVoice` whose reason and data say what is wrong (`flows.errors` words it).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gpu_worker.errors import BadVoice

FEATURE_DIMS = {"v1": 256, "v2": 768}
"""Content-feature width per RVC version."""
HOPS = {32000: 320, 40000: 400, 48000: 480}
"""Samples per 10 ms feature frame: the product of the decoder's upsample rates."""
SPEC_CHANNELS = {32000: 513, 40000: 1025, 48000: 1025}
"""FFT bins + 1 of the posterior encoder's input (1024- or 2048-point FFT)."""
MAXIMA = {
    "inter_channels": 192,
    "hidden_channels": 192,
    "filter_channels": 768,
    "n_heads": 2,
    "n_layers": 6,
    "kernel_size": 3,
    "upsample_initial_channel": 512,
    "spk_embed_dim": 109,
    "gin_channels": 256,
    "segment_size": 1024,
}
"""The real RVC v1/v2 sizes (every official config and base model): no voice is larger."""
MAX_UPSAMPLES = 5
MAX_UPSAMPLE_KERNEL = 32
MAX_RESBLOCK_KERNEL = 11
MAX_DILATION = 5
MAX_RESBLOCKS = 3
MAX_PARAMS = 60_000_000
"""Above any real voice: the largest RVC synthesizer, posterior encoder included, has 37.6 M."""
FLOAT_DTYPES = frozenset({"float16", "float32", "bfloat16"})

# The flow and posterior encoder of every RVC synthesizer (fixed in its code, not its config).
FLOW_STEPS = 4
FLOW_KERNEL, FLOW_LAYERS = 5, 3
POSTERIOR_KERNEL, POSTERIOR_LAYERS = 5, 16
ATTENTION_WINDOW = 10
PITCH_BINS = 256


@dataclass(frozen=True)
class Geometry:
    """An RVC synthesizer's hyperparameters (the `config` list), checked."""

    spec_channels: int
    segment_size: int
    inter_channels: int
    hidden_channels: int
    filter_channels: int
    n_heads: int
    n_layers: int
    kernel_size: int
    resblock: str
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    upsample_rates: tuple[int, ...]
    upsample_initial_channel: int
    upsample_kernel_sizes: tuple[int, ...]
    spk_embed_dim: int
    gin_channels: int
    sample_rate: int


def _bad(name: str, part: str, **facts: Any) -> BadVoice:
    """The voice `name` is damaged: `part` names what (see `flows.errors`), `facts` the values."""
    return BadVoice("damaged", name=name, part=part, **facts)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ints(value: Any, most: int) -> tuple[int, ...] | None:
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= most:
        return None
    out = tuple(_int(v) for v in value)
    return out if all(v is not None and v >= 1 for v in out) else None  # type: ignore[return-value]


def parse_config(config: Any, name: str) -> Geometry:
    """The 18-value config as a `Geometry`, or `BadVoice` when it is not an RVC geometry."""
    if not isinstance(config, list | tuple) or len(config) != 18:
        raise _bad(name, "config")
    sample_rate = _int(config[17])
    if sample_rate not in HOPS:
        raise BadVoice("sample_rate", name=name, sample_rate=str(config[17])[:20])
    sizes = {
        "segment_size": config[1],
        "inter_channels": config[2],
        "hidden_channels": config[3],
        "filter_channels": config[4],
        "n_heads": config[5],
        "n_layers": config[6],
        "kernel_size": config[7],
        "upsample_initial_channel": config[13],
        "spk_embed_dim": config[15],
        "gin_channels": config[16],
    }
    for key, value in sizes.items():
        v = _int(value)
        if v is None or not 1 <= v <= MAXIMA[key]:
            raise BadVoice(
                "not_rvc_size", name=name, key=key, value=str(value)[:20], most=MAXIMA[key]
            )
    if _int(config[0]) != SPEC_CHANNELS[sample_rate]:
        raise _bad(name, "spectrogram", sample_rate=sample_rate)
    p_dropout = config[8]
    if not isinstance(p_dropout, int | float) or not 0 <= p_dropout < 1:
        raise _bad(name, "dropout")
    resblock = str(config[9])
    if resblock not in ("1", "2"):
        raise _bad(name, "resblock_type")
    r_kernels = _ints(config[10], MAX_RESBLOCKS)
    dilations_raw = config[11]
    if (
        r_kernels is None
        or any(k > MAX_RESBLOCK_KERNEL or k % 2 == 0 for k in r_kernels)
        or not isinstance(dilations_raw, list | tuple)
        or len(dilations_raw) != len(r_kernels)
    ):
        raise _bad(name, "resblocks")
    dilations = tuple(_ints(d, 3) for d in dilations_raw)
    need = 3 if resblock == "1" else 2
    if any(d is None or len(d) != need or max(d) > MAX_DILATION for d in dilations):
        raise _bad(name, "dilations")
    rates = _ints(config[12], MAX_UPSAMPLES)
    kernels = _ints(config[14], MAX_UPSAMPLES)
    if rates is None or kernels is None or len(rates) != len(kernels):
        raise _bad(name, "decoder")
    if math.prod(rates) != HOPS[sample_rate]:
        raise BadVoice(
            "upsampling",
            name=name,
            upsamples=math.prod(rates),
            sample_rate=sample_rate,
            needs=HOPS[sample_rate],
        )
    if any(
        not u <= k <= min(4 * u, MAX_UPSAMPLE_KERNEL) or (k - u) % 2
        for u, k in zip(rates, kernels, strict=True)
    ):
        raise _bad(name, "decoder_kernels")
    geo = Geometry(
        spec_channels=config[0],
        segment_size=sizes["segment_size"],
        inter_channels=sizes["inter_channels"],
        hidden_channels=sizes["hidden_channels"],
        filter_channels=sizes["filter_channels"],
        n_heads=sizes["n_heads"],
        n_layers=sizes["n_layers"],
        kernel_size=sizes["kernel_size"],
        resblock=resblock,
        resblock_kernel_sizes=r_kernels,
        resblock_dilation_sizes=dilations,  # type: ignore[arg-type]
        upsample_rates=rates,
        upsample_initial_channel=sizes["upsample_initial_channel"],
        upsample_kernel_sizes=kernels,
        spk_embed_dim=sizes["spk_embed_dim"],
        gin_channels=sizes["gin_channels"],
        sample_rate=sample_rate,
    )
    if geo.hidden_channels % geo.n_heads or geo.inter_channels % 2:
        raise _bad(name, "channels")
    if geo.upsample_initial_channel % 2 ** len(rates):
        raise _bad(name, "decoder_width")
    return geo


# -- the tensors a geometry implies ------------------------------------------------------------

Shape = tuple[int, ...]


def _conv(
    out: dict[str, Shape], key: str, c_out: int, c_in: int, k: int, bias: bool = True
) -> None:
    out[f"{key}.weight"] = (c_out, c_in, k)
    if bias:
        out[f"{key}.bias"] = (c_out,)


def _wn_conv(out: dict[str, Shape], key: str, c_out: int, c_in: int, k: int) -> None:
    """A weight-normed Conv1d: magnitude, direction, bias."""
    out[f"{key}.weight_g"] = (c_out, 1, 1)
    out[f"{key}.weight_v"] = (c_out, c_in, k)
    out[f"{key}.bias"] = (c_out,)


def _wavenet(
    out: dict[str, Shape], key: str, hidden: int, kernel: int, layers: int, gin: int
) -> None:
    for i in range(layers):
        _wn_conv(out, f"{key}.in_layers.{i}", 2 * hidden, hidden, kernel)
        skip = 2 * hidden if i < layers - 1 else hidden
        _wn_conv(out, f"{key}.res_skip_layers.{i}", skip, hidden, 1)
    if gin:
        _wn_conv(out, f"{key}.cond_layer", 2 * hidden * layers, gin, 1)


def expected_shapes(geo: Geometry, version: str, f0: bool, speakers: int) -> dict[str, Shape]:
    """Every tensor (name → shape) of the synthesizer `geo` builds, without its posterior
    encoder (`enc_q`, which voices leave out; see `posterior_shapes`)."""
    h, inter, filt = geo.hidden_channels, geo.inter_channels, geo.filter_channels
    out: dict[str, Shape] = {"emb_g.weight": (speakers, geo.gin_channels)}
    out["enc_p.emb_phone.weight"] = (h, FEATURE_DIMS[version])
    out["enc_p.emb_phone.bias"] = (h,)
    if f0:
        out["enc_p.emb_pitch.weight"] = (PITCH_BINS, h)
    rel = (1, 2 * ATTENTION_WINDOW + 1, h // geo.n_heads)
    for i in range(geo.n_layers):
        key = f"enc_p.encoder.attn_layers.{i}"
        out[f"{key}.emb_rel_k"] = rel
        out[f"{key}.emb_rel_v"] = rel
        for conv in ("conv_q", "conv_k", "conv_v", "conv_o"):
            _conv(out, f"{key}.{conv}", h, h, 1)
        for norm in ("norm_layers_1", "norm_layers_2"):
            out[f"enc_p.encoder.{norm}.{i}.gamma"] = (h,)
            out[f"enc_p.encoder.{norm}.{i}.beta"] = (h,)
        _conv(out, f"enc_p.encoder.ffn_layers.{i}.conv_1", filt, h, geo.kernel_size)
        _conv(out, f"enc_p.encoder.ffn_layers.{i}.conv_2", h, filt, geo.kernel_size)
    _conv(out, "enc_p.proj", 2 * inter, h, 1)

    # The decoder (HiFi-GAN, with the NSF source module when pitch-guided).
    ch0 = geo.upsample_initial_channel
    _conv(out, "dec.conv_pre", ch0, inter, 7)
    rates = geo.upsample_rates
    for i, k in enumerate(geo.upsample_kernel_sizes):
        c_in, c_out = ch0 // 2**i, ch0 // 2 ** (i + 1)
        out[f"dec.ups.{i}.weight_g"] = (c_in, 1, 1)
        out[f"dec.ups.{i}.weight_v"] = (c_in, c_out, k)
        out[f"dec.ups.{i}.bias"] = (c_out,)
        if f0:
            stride = math.prod(rates[i + 1 :])
            _conv(out, f"dec.noise_convs.{i}", c_out, 1, 2 * stride if i < len(rates) - 1 else 1)
        for j, (rk, dil) in enumerate(
            zip(geo.resblock_kernel_sizes, geo.resblock_dilation_sizes, strict=True)
        ):
            block = f"dec.resblocks.{i * len(geo.resblock_kernel_sizes) + j}"
            groups = ("convs1", "convs2") if geo.resblock == "1" else ("convs",)
            for group in groups:
                for n in range(len(dil)):
                    _wn_conv(out, f"{block}.{group}.{n}", c_out, c_out, rk)
    last = ch0 // 2 ** len(rates)
    _conv(out, "dec.conv_post", 1, last, 7, bias=False)
    _conv(out, "dec.cond", ch0, geo.gin_channels, 1)
    if f0:
        out["dec.m_source.l_linear.weight"] = (1, 1)
        out["dec.m_source.l_linear.bias"] = (1,)

    # The flow: residual coupling layers (every other module is a parameterless flip).
    for i in range(FLOW_STEPS):
        key = f"flow.flows.{2 * i}"
        _conv(out, f"{key}.pre", h, inter // 2, 1)
        _wavenet(out, f"{key}.enc", h, FLOW_KERNEL, FLOW_LAYERS, geo.gin_channels)
        _conv(out, f"{key}.post", inter // 2, h, 1)
    return out


def posterior_shapes(geo: Geometry) -> dict[str, Shape]:
    """The posterior encoder's tensors (training only; some voices keep them)."""
    out: dict[str, Shape] = {}
    _conv(out, "enc_q.pre", geo.hidden_channels, geo.spec_channels, 1)
    _wavenet(
        out, "enc_q.enc", geo.hidden_channels, POSTERIOR_KERNEL, POSTERIOR_LAYERS, geo.gin_channels
    )
    _conv(out, "enc_q.proj", 2 * geo.inter_channels, geo.hidden_channels, 1)
    return out


def standard_names(shapes: Mapping[str, Any]) -> dict[str, Any]:
    """`shapes` with PyTorch's newer weight-norm names (`.parametrizations.weight.original0/1`,
    which newer trainers save) as RVC's `weight_g` / `weight_v`."""
    out: dict[str, Any] = {}
    for key, value in shapes.items():
        for suffix, short in ((".parametrizations.weight.original0", ".weight_g"),
                              (".parametrizations.weight.original1", ".weight_v")):  # fmt: skip
            if isinstance(key, str) and key.endswith(suffix):
                key = key[: -len(suffix)] + short
        out[key] = value
    return out


def check_voice(
    config: Any, tensors: Mapping[str, tuple[Shape, str]], version: str, f0: bool, name: str
) -> Geometry:
    """Check a voice's config and tensors (name → (shape, dtype name)); `BadVoice` otherwise.

    Cheap checks on metadata only: nothing is allocated from the file's numbers."""
    if version not in FEATURE_DIMS:
        raise BadVoice("version", name=name, version=f"{version!s:.10}")
    total = 0
    for key, (shape, dtype) in tensors.items():
        if not isinstance(key, str) or len(key) > 120:
            raise _bad(name, "weight_names")
        if dtype not in FLOAT_DTYPES:
            raise BadVoice("dtype", name=name, dtype=str(dtype)[:20])
        total += math.prod(shape)
        if total > MAX_PARAMS:
            raise BadVoice("too_many_parameters", name=name, most=MAX_PARAMS)
    geo = parse_config(config, name)
    tensors = standard_names(tensors)
    emb = tensors.get("emb_g.weight")
    speakers = emb[0][0] if emb and len(emb[0]) == 2 else 0
    if not 1 <= speakers <= MAXIMA["spk_embed_dim"]:
        raise _bad(name, "speakers")
    want = expected_shapes(geo, version, f0, speakers)
    if any(k.startswith("enc_q.") for k in tensors):
        want.update(posterior_shapes(geo))
    missing = [k for k in want if k not in tensors]
    if missing:
        raise _bad(name, "missing_weight", key=missing[0])
    extra = [k for k in tensors if k not in want]
    if extra:
        raise _bad(name, "extra_weight", key=str(extra[0])[:60])
    for key, shape in want.items():
        got = tuple(tensors[key][0])
        if got != shape:
            raise _bad(name, "shape", key=key, shape=list(got), needs=list(shape))
    return geo


# -- faiss index files -------------------------------------------------------------------------

MAX_NLIST = 65536
"""RVC picks min(16·√n, n/39) lists; this is above that for any real dataset."""
L2 = 1


class _Reader:
    """Reads a faiss file's fields, never past its end; seeks over data blocks."""

    def __init__(self, fh: BinaryIO, size: int, name: str):
        self.fh, self.size, self.name = fh, size, name

    def fail(self, part: str, **facts: Any) -> BadVoice:
        """The index is damaged: `part` names what (see `flows.errors`), `facts` the values."""
        return BadVoice("damaged_index", name=self.name, part=part, **facts)

    def take(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise self.fail("cut_short")
        return data

    def fourcc(self) -> bytes:
        return self.take(4)

    def i32(self) -> int:
        return struct.unpack("<i", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def i64(self) -> int:
        return struct.unpack("<q", self.take(8))[0]

    def skip(self, n: int) -> None:
        if n < 0 or self.fh.tell() + n > self.size:
            raise self.fail("overlong")
        self.fh.seek(n, 1)

    def header(self) -> tuple[int, int]:
        """faiss's Index header: d, ntotal (two unused words, is_trained, metric)."""
        d, ntotal = self.i32(), self.i64()
        self.take(16)
        trained = self.take(1)[0]
        metric = self.i32()
        if metric != L2 or trained != 1:
            raise self.fail("not_trained_l2")
        return d, ntotal


def check_index(path: Path, dim: int, name: str | None = None) -> int:
    """Walk a faiss index file's structure before faiss reads it; returns its vector count.

    Accepted: IndexIVFFlat ("IwFl") over an IndexFlatL2 quantizer ("IxF2") with array inverted
    lists ("ilar", "full" or "sprs" sizes), of dimension `dim`, ending exactly at the file's end.
    """
    path = Path(path)
    name = name or (path.name if len(path.name) <= 80 else path.name[:77] + "...")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        r = _Reader(fh, size, name)
        if r.fourcc() != b"IwFl":
            raise BadVoice("index_kind", name=name)
        d, ntotal = r.header()
        if d not in FEATURE_DIMS.values():
            raise r.fail("dimension", dim=d)
        if d != dim:
            raise BadVoice("index_of_another_voice", name=name, dim=d, needs=dim)
        vector = d * 4
        if not 1 <= ntotal <= size // vector:
            raise r.fail("vectors", vectors=ntotal, size=size)
        nlist, nprobe = r.u64(), r.u64()
        if not 1 <= nlist <= MAX_NLIST or nlist * vector > size or not 1 <= nprobe <= nlist:
            raise r.fail("clusters")
        if r.fourcc() != b"IxF2":
            raise r.fail("quantizer")
        qd, qn = r.header()
        if qd != d or qn != nlist or r.u64() != nlist * d:
            raise r.fail("quantizer_mismatch")
        r.skip(nlist * vector)
        map_type = r.take(1)[0]
        if map_type not in (0, 1, 2):
            raise r.fail("id_map")
        r.skip(8 * _count(r, ntotal))
        if map_type == 2:
            r.skip(16 * _count(r, ntotal))
        if r.fourcc() != b"ilar" or r.u64() != nlist or r.u64() != vector:
            raise r.fail("inverted_lists")
        kind = r.fourcc()
        sizes: list[int]
        if kind == b"full":
            if _count(r, nlist) != nlist:
                raise r.fail("list_sizes")
            sizes = list(struct.unpack(f"<{nlist}Q", r.take(8 * nlist)))
        elif kind == b"sprs":
            pairs = _count(r, 2 * nlist)
            if pairs % 2:
                raise r.fail("list_sizes")
            values = struct.unpack(f"<{pairs}Q", r.take(8 * pairs))
            sizes = [0] * nlist
            for list_no, n in zip(values[::2], values[1::2], strict=True):
                if list_no >= nlist:
                    raise r.fail("list_sizes")
                sizes[list_no] = n
        else:
            raise r.fail("inverted_lists")
        if sum(sizes) != ntotal:
            raise r.fail("list_total")
        r.skip(ntotal * (vector + 8))
        if fh.tell() != size:
            raise r.fail("trailing_data")
    return ntotal


def _count(r: _Reader, most: int) -> int:
    """A faiss vector's length prefix, at most `most`."""
    n = r.u64()
    if n > most:
        raise r.fail("overlong")
    return n
