"""The weights folder: what must be in it, what is, and filling it with `encore models download`.

Layout under `ENCORE_MODEL_DIR`:
- `demucs/`: Demucs models (`<sig>.th` and bag `.yaml` files), read by Demucs's own loader:
  the separation model, and the six-stem model (`htdemucs_6s`) that `/stems six` uses;
- `rvc/`: rvc-next assets (HuBERT, RMVPE, the pretrained v2 base models);
- `voices/demo/`: the demo voice (`.pth` and `.index`), used by `encore demo`.

Downloads go through each library's own mechanism (see `gpu_worker.separate.download_demucs` and
`gpu_worker.convert.download_assets`). Jobs never download; they call `require`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from flows.settings import Settings
from gpu_worker import convert, separate
from gpu_worker.convert import export_voice
from gpu_worker.errors import EngineError, ModelMissing

DEMO_INFO = "Encore demo voice: the RVC v2 40k pretrained base generator (MIT)"


@dataclass(frozen=True)
class Part:
    part: str
    ok: bool
    path: Path


def separation_model(s: Settings) -> str:
    return s.separation_model or separate.default_model(s.resolved_device())


def status(s: Settings) -> list[Part]:
    demucs_dir = s.models / "demucs"
    model = separation_model(s)
    rows = [Part(f"separation ({model})", _demucs_present(demucs_dir, model), demucs_dir)]
    rvc_dir = s.models / "rvc"
    missing = convert.missing_assets(rvc_dir, s.f0_method)
    rows.append(Part(f"voice conversion ({s.f0_method})", not missing, rvc_dir))
    base_missing = convert.missing_assets(rvc_dir, s.f0_method, training=True)
    rows.append(Part("voice training base (v2 40k)", not base_missing, rvc_dir))
    demo = s.models / "voices" / "demo"
    rows.append(Part("demo voice", any(demo.glob("*.pth")) if demo.is_dir() else False, demo))
    six = s.six_stems_model
    rows.append(Part(f"six stems ({six})", _demucs_present(demucs_dir, six), demucs_dir))
    return rows


def require_six_stems(s: Settings) -> None:
    """Raise ModelMissing unless the six-stem model (`/stems six`) is in the model folder."""
    row = status(s)[-1]
    if not row.ok:
        raise ModelMissing("part", part=row.part, folder=str(row.path))


def _demucs_present(folder: Path, name: str) -> bool:
    try:
        separate.load_model(folder, name, "cpu")
    except (ModelMissing, EngineError):
        return False
    return True


def require(s: Settings, conversion: bool = True, training: bool = False) -> None:
    """Raise ModelMissing (which part, and the folder it belongs in) unless the job's models
    are here."""
    rows = status(s)
    wanted = rows[:1] + (rows[1:2] if conversion else []) + (rows[2:3] if training else [])
    for row in wanted:
        if not row.ok:
            raise ModelMissing("part", part=row.part, folder=str(row.path))


def download(s: Settings, console: Console) -> None:
    """Fill the model folder: Demucs models, rvc-next assets, the demo voice."""
    model = separation_model(s)
    for name, what in ((model, "separation model"), (s.six_stems_model, "six-stem model")):
        with console.status(f"Downloading the Demucs model {name}..."):
            separate.download_demucs(s.models / "demucs", [name])
        console.print(f"[green]✓[/green] {what} {name}")

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("Voice models (HuBERT, RMVPE, v2 base)", total=1.0)

        def show(fraction: float | None, message: str) -> None:
            if fraction is None:
                bar.console.log(message)
            else:
                bar.update(task, completed=fraction)

        convert.download_assets(s.models / "rvc", show, f0_methods=(s.f0_method,))
    console.print("[green]✓[/green] voice conversion and training models")
    demo = s.models / "voices" / "demo" / "demo.pth"
    base = s.models / "rvc" / "pretrained_v2" / "f0G40k.pth"
    export_voice(base, demo, sample_rate="40k", version="v2", info=DEMO_INFO)
    console.print("[green]✓[/green] demo voice")
    console.print("Ready: try `encore demo`.")
