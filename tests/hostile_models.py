"""Hostile voice models, indexes and archives for tests, each with the sentence that refuses it.

Every builder takes a folder and a good tiny voice (`.pth`, `.index`, from `tests.tiny_rvc`)
and writes a small file that attacks one rule: absurd or inconsistent configs, tensors that do
not match their config, weights that are not floats or not finite, pickles that run code,
faiss headers that declare more than the file holds, and zips built to exhaust or escape
(forged entry counts, encryption, overlapping data, duplicates, links, nesting, lying sizes).
`HOSTILE` maps a case name to its builder; a builder returns the files a user would send and
the one sentence the import must end with.
"""

from __future__ import annotations

import stat
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.hostile import code_running_pth

Built = tuple[list[Path], str]
Builder = Callable[[Path, Path, Path], Built]
HOSTILE: dict[str, Builder] = {}

FIX = "upload the original .pth again"
INDEX_FIX = "upload the voice's added_*.index again or import without it"
ZIP_FIX = "zip only the .pth and .index"


def case(fn: Builder) -> Builder:
    HOSTILE[fn.__name__] = fn
    return fn


def edit_voice(good: Path, dst: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the voice `good` at `dst`, after `change(data)` edited its loaded dict."""
    import torch

    data = torch.load(str(good), map_location="cpu", weights_only=True)
    change(data)
    torch.save(data, dst)
    return dst


def _config(i: int, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["config"][i] = value

    return change


# -- models ------------------------------------------------------------------------------------


@case
def absurd_channels(folder: Path, pth: Path, index: Path) -> Built:
    """A config asking for a 1,000,000-wide hidden layer: the tensors are still tiny."""
    bad = edit_voice(pth, folder / "wide.pth", _config(3, 1_000_000))
    return [bad], (
        "wide.pth asks for hidden_channels = 1000000, outside what RVC voices use (1-192); "
        "it is not a real RVC voice."
    )


@case
def absurd_speakers(folder: Path, pth: Path, index: Path) -> Built:
    bad = edit_voice(pth, folder / "crowd.pth", _config(15, 10**9))
    return [bad], (
        "crowd.pth asks for spk_embed_dim = 1000000000, outside what RVC voices use (1-109); "
        "it is not a real RVC voice."
    )


@case
def config_wider_than_tensors(folder: Path, pth: Path, index: Path) -> Built:
    """The config says 64 decoder channels; the weights were made for 32."""
    bad = edit_voice(pth, folder / "liar.pth", _config(13, 64))
    return [bad], (
        f"liar.pth has dec.conv_pre.weight of shape [32, 8, 7] where its config needs "
        f"[64, 8, 7]; {FIX}."
    )


@case
def embedding_shape(folder: Path, pth: Path, index: Path) -> Built:
    import torch

    def change(data: dict[str, Any]) -> None:
        data["weight"]["enc_p.emb_phone.weight"] = torch.zeros(40, 768, dtype=torch.float16)

    bad = edit_voice(pth, folder / "emb.pth", change)
    return [bad], (
        f"emb.pth has enc_p.emb_phone.weight of shape [40, 768] where its config needs "
        f"[16, 768]; {FIX}."
    )


@case
def decoder_kernel_shape(folder: Path, pth: Path, index: Path) -> Built:
    import torch

    def change(data: dict[str, Any]) -> None:
        data["weight"]["dec.ups.1.weight_v"] = torch.zeros(16, 8, 40, dtype=torch.float16)

    bad = edit_voice(pth, folder / "ups.pth", change)
    return [bad], (
        f"ups.pth has dec.ups.1.weight_v of shape [16, 8, 40] where its config needs "
        f"[16, 8, 16]; {FIX}."
    )


@case
def missing_flow_weights(folder: Path, pth: Path, index: Path) -> Built:
    bad = edit_voice(pth, folder / "holes.pth", lambda d: d["weight"].pop("flow.flows.6.post.bias"))
    return [bad], f"holes.pth lacks weights its config needs (flow.flows.6.post.bias); {FIX}."


@case
def extra_weights(folder: Path, pth: Path, index: Path) -> Built:
    import torch

    def change(data: dict[str, Any]) -> None:
        data["weight"]["dec.payload.weight"] = torch.zeros(4, 4, dtype=torch.float16)

    bad = edit_voice(pth, folder / "extra.pth", change)
    return [bad], f"extra.pth holds weights its config does not have (dec.payload.weight); {FIX}."


@case
def wrong_feature_dim(folder: Path, pth: Path, index: Path) -> Built:
    """Says v2 (768-dim features) but its content embedding reads 256."""
    import torch

    def change(data: dict[str, Any]) -> None:
        data["weight"]["enc_p.emb_phone.weight"] = torch.zeros(16, 256, dtype=torch.float16)

    bad = edit_voice(pth, folder / "v1ish.pth", change)
    return [bad], (
        "v1ish.pth says it is an RVC v2 voice but its weights do not match; it is damaged."
    )


@case
def upsampling_off_hop(folder: Path, pth: Path, index: Path) -> Built:
    bad = edit_voice(pth, folder / "hop.pth", _config(12, [10, 10, 2, 4]))
    return [bad], "hop.pth upsamples by 800 but 40000 Hz needs 400; it is not a real RVC voice."


@case
def kernel_unfit_for_rate(folder: Path, pth: Path, index: Path) -> Built:
    bad = edit_voice(pth, folder / "kern.pth", _config(14, [16, 16, 4, 31]))
    return [bad], f"kern.pth has decoder kernel sizes that do not fit its upsample rates; {FIX}."


@case
def unknown_sample_rate(folder: Path, pth: Path, index: Path) -> Built:
    bad = edit_voice(pth, folder / "hifi.pth", _config(17, 96000))
    return [bad], "hifi.pth synthesises at 96000 Hz; RVC voices use 32, 40 or 48 kHz."


@case
def too_many_parameters(folder: Path, pth: Path, index: Path) -> Built:
    """One stored float viewed as a 100,000 x 100,000 matrix: a tiny file, 10^10 parameters."""
    import torch

    def change(data: dict[str, Any]) -> None:
        data["weight"]["emb_g.weight"] = torch.zeros(1, 1).expand(100_000, 100_000)

    bad = edit_voice(pth, folder / "huge.pth", change)
    return [bad], (
        "huge.pth holds over 60 million parameters, more than any RVC voice; "
        "it is not a real RVC voice."
    )


@case
def nan_weights(folder: Path, pth: Path, index: Path) -> Built:
    def change(data: dict[str, Any]) -> None:
        weight = data["weight"]["dec.conv_post.weight"].clone()
        weight[0, 0, 3] = float("nan")
        data["weight"]["dec.conv_post.weight"] = weight

    bad = edit_voice(pth, folder / "nan.pth", change)
    return [bad], "nan.pth has NaN or infinite weights, so it cannot sing; use another copy."


@case
def int_tensors(folder: Path, pth: Path, index: Path) -> Built:
    def change(data: dict[str, Any]) -> None:
        data["weight"]["emb_g.weight"] = data["weight"]["emb_g.weight"].long()

    bad = edit_voice(pth, folder / "ints.pth", change)
    return [bad], "ints.pth stores int64 weights; RVC voices hold float16 or float32 weights only."


@case
def pickle_runs_code(folder: Path, pth: Path, index: Path) -> Built:
    bad = code_running_pth(folder / "evil.pth", folder / "pwned")
    return [bad], (
        "evil.pth holds Python objects besides weights and was refused, "
        "as loading it could run code."
    )


@case
def deflated_pth_bomb(folder: Path, pth: Path, index: Path) -> Built:
    """A `.pth` re-zipped with compression, around a record of 200 MB of zeros."""
    bad = folder / "packed.pth"
    with zipfile.ZipFile(pth) as src, zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        with dst.open("archive/data/9999", "w", force_zip64=True) as fh:
            for _ in range(200):
                fh.write(bytes(1 << 20))
    return [bad], f"The voice file packed.pth expands far beyond its size; {FIX}."


# -- indexes -----------------------------------------------------------------------------------


def _patched(index: Path, dst: Path, offset: int, fmt: str, value: int) -> Path:
    data = bytearray(index.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    dst.write_bytes(bytes(data))
    return dst


@case
def index_huge_ntotal(folder: Path, pth: Path, index: Path) -> Built:
    """The header claims 10^12 vectors (3 TB of floats): faiss would try to allocate them."""
    bad = _patched(index, folder / "added_big.index", 8, "<q", 10**12)
    size = bad.stat().st_size
    return [pth, bad], (
        f"The index file added_big.index declares 1000000000000 vectors, which do not fit in "
        f"its {size} bytes; {INDEX_FIX}."
    )


@case
def index_huge_dim(folder: Path, pth: Path, index: Path) -> Built:
    bad = _patched(index, folder / "added_wide.index", 4, "<i", 1 << 30)
    return [pth, bad], (
        f"The index file added_wide.index holds 1073741824-dim vectors, which no RVC voice uses; "
        f"{INDEX_FIX}."
    )


@case
def index_huge_nlist(folder: Path, pth: Path, index: Path) -> Built:
    bad = _patched(index, folder / "added_lists.index", 37, "<Q", 1 << 40)
    return [pth, bad], (
        f"The index file added_lists.index declares an impossible number of clusters; {INDEX_FIX}."
    )


@case
def index_truncated(folder: Path, pth: Path, index: Path) -> Built:
    bad = folder / "added_cut.index"
    bad.write_bytes(index.read_bytes()[:-1000])  # the header is whole; the last lists are not
    return [
        pth,
        bad,
    ], f"The index file added_cut.index declares more data than it holds; {INDEX_FIX}."


@case
def index_unsupported_type(folder: Path, pth: Path, index: Path) -> Built:
    """A flat index (no IVF), which RVC never writes."""
    import faiss
    import numpy as np

    flat = faiss.IndexFlatL2(768)
    flat.add(np.zeros((4, 768), np.float32))
    bad = folder / "added_flat.index"
    faiss.write_index(flat, str(bad))
    return [pth, bad], (
        "The index file added_flat.index is not an IVF-Flat faiss index, the kind RVC writes; "
        "import the voice without it or send its added_*.index."
    )


@case
def index_other_voice_dim(folder: Path, pth: Path, index: Path) -> Built:
    """A v1 (256-dim) index beside a v2 voice."""
    import faiss
    import numpy as np

    data = np.random.default_rng(0).standard_normal((80, 256)).astype(np.float32)
    ivf = faiss.index_factory(256, "IVF2,Flat")
    ivf.train(data)
    ivf.add(data)
    bad = folder / "added_v1.index"
    faiss.write_index(ivf, str(bad))
    return [pth, bad], (
        "The index file added_v1.index holds 256-dim features but the voice needs 768; "
        "it belongs to another voice, so send this voice's own index."
    )


@case
def index_trailing_data(folder: Path, pth: Path, index: Path) -> Built:
    bad = folder / "added_tail.index"
    bad.write_bytes(index.read_bytes() + bytes(4096))
    return [pth, bad], f"The index file added_tail.index has data after its end; {INDEX_FIX}."


# -- archives ----------------------------------------------------------------------------------


def _zip(dst: Path, entries: list[tuple[str, bytes]], **kw: Any) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point of one case
        with zipfile.ZipFile(dst, "w", **kw) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return dst


def _eocd(data: bytes) -> int:
    return data.rindex(b"PK\x05\x06")


@case
def zip_forged_entry_count(folder: Path, pth: Path, index: Path) -> Built:
    """An end record (zip64) declaring 100,000 entries in a 1 KB file."""
    plain = _zip(folder / "plain.zip", [("a.pth", b"x")])
    data = bytearray(plain.read_bytes())
    at = _eocd(data)
    cd_size, cd_offset = struct.unpack_from("<II", data, at + 12)
    record = struct.pack(
        "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, 100_000, 100_000, cd_size, cd_offset
    )
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, at, 1)
    end = bytearray(data[at:])
    struct.pack_into("<HH", end, 8, 0xFFFF, 0xFFFF)
    bad = folder / "many.zip"
    bad.write_bytes(bytes(data[:at]) + record + locator + bytes(end))
    return [bad], f"The zip holds too many files; {ZIP_FIX}."


@case
def zip_directory_beyond_its_count(folder: Path, pth: Path, index: Path) -> Built:
    """The end record says 1 entry; the directory it points at lists 3,000."""
    data = bytearray(
        _zip(folder / "plain.zip", [(f"{i}.pth", b"") for i in range(3000)]).read_bytes()
    )
    struct.pack_into("<HH", data, _eocd(data) + 8, 1, 1)
    bad = folder / "dense.zip"
    bad.write_bytes(bytes(data))
    return [bad], f"The zip holds too many files; {ZIP_FIX}."


@case
def zip_encrypted(folder: Path, pth: Path, index: Path) -> Built:
    data = bytearray(_zip(folder / "plain.zip", [("voice.pth", pth.read_bytes())]).read_bytes())
    struct.pack_into("<H", data, 6, 0x1)  # local header flags
    struct.pack_into("<H", data, data.rindex(b"PK\x01\x02") + 8, 0x1)  # central directory
    bad = folder / "locked.zip"
    bad.write_bytes(bytes(data))
    return [bad], f"The zip is encrypted; {ZIP_FIX} without a password."


@case
def zip_overlapping_entries(folder: Path, pth: Path, index: Path) -> Built:
    """Two central records pointing at one local entry: the overlapping-file zip bomb."""
    data = bytearray(_zip(folder / "plain.zip", [("v.pth", pth.read_bytes())]).read_bytes())
    at = _eocd(data)
    cd_size, cd_offset = struct.unpack_from("<II", data, at + 12)
    first = bytes(data[cd_offset : cd_offset + cd_size])
    second = first.replace(b"v.pth", b"w.pth")
    end = bytearray(data[at:])
    struct.pack_into("<HHI", end, 8, 2, 2, 2 * cd_size)
    bad = folder / "overlap.zip"
    bad.write_bytes(bytes(data[:cd_offset]) + first + second + bytes(end))
    return [bad], f"The zip has entries whose data overlap, a zip bomb trick; {ZIP_FIX}."


@case
def zip_duplicate_names(folder: Path, pth: Path, index: Path) -> Built:
    bad = _zip(folder / "twice.zip", [("v/model.pth", pth.read_bytes()), ("v/model.pth", b"x")])
    return [bad], f"The zip holds two entries named model.pth; {ZIP_FIX}."


@case
def zip_path_traversal(folder: Path, pth: Path, index: Path) -> Built:
    bad = _zip(folder / "slip.zip", [("../../outside.pth", pth.read_bytes())])
    return [bad], f"The zip contains unsafe paths; {ZIP_FIX}."


@case
def zip_symlink(folder: Path, pth: Path, index: Path) -> Built:
    bad = folder / "link.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        info = zipfile.ZipInfo("model.pth")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    return [bad], f"The zip contains a symbolic link; {ZIP_FIX}."


@case
def zip_nested(folder: Path, pth: Path, index: Path) -> Built:
    inner = _zip(folder / "inner.zip", [("voice.pth", pth.read_bytes())])
    bad = _zip(
        folder / "outer.zip", [("voice.pth", pth.read_bytes()), ("inner.zip", inner.read_bytes())]
    )
    return [
        bad
    ], "The zip holds another archive (inner.zip); unzip it and send the .pth and .index."


@case
def zip_lying_size(folder: Path, pth: Path, index: Path) -> Built:
    """The directory says the model is 1 KB; its data inflates to the whole model."""
    data = bytearray(
        _zip(
            folder / "plain.zip", [("v.pth", pth.read_bytes())], compression=zipfile.ZIP_DEFLATED
        ).read_bytes()
    )
    struct.pack_into("<I", data, 22, 1024)  # local header: uncompressed size
    struct.pack_into("<I", data, data.rindex(b"PK\x01\x02") + 24, 1024)
    bad = folder / "small.zip"
    bad.write_bytes(bytes(data))
    return [bad], "This zip file is damaged; zip the model again and resend it."


@case
def zip_stranger_file(folder: Path, pth: Path, index: Path) -> Built:
    bad = _zip(folder / "extra.zip", [("voice.pth", pth.read_bytes()), ("run.sh", b"rm -rf /")])
    return [bad], f"The zip holds 'run.sh', which is not part of an RVC model; {ZIP_FIX}."


def build(name: str, folder: Path, pth: Path, index: Path) -> Built:
    """Build case `name` in a fresh `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    return HOSTILE[name](folder, pth, index)
