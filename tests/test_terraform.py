"""The Terraform under infra/terraform, checked offline.

With the `terraform` binary and a local filesystem mirror of the hashicorp/aws provider (see
STACK.md), the AWS module is formatted, initialised, validated and run through its
`terraform test` file (mocked provider, real assertions on values). Without them those steps
are skipped with the reason. Both modules are also parsed with python-hcl2, which needs
neither; the Prefect module can only be checked that way, because its provider cannot be
installed offline.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TF_DIR = ROOT / "infra" / "terraform"
AWS_DIR = TF_DIR / "aws"
PREFECT_DIR = TF_DIR / "prefect"

# A filesystem mirror lays providers out as <root>/<host>/<namespace>/<type>/<version>/<os_arch>/.
_MIRROR_GLOBS = (
    "/opt/tf-plugins/registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*",
    "/opt/*/registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*",
    "/usr/share/terraform/plugins/registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*",
)


def _mirror_root() -> Path | None:
    given = os.environ.get("ENCORE_TF_PLUGIN_MIRROR")
    if given:
        return Path(given)
    for pattern in _MIRROR_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[0]).parents[5]
    return None


def _terraform() -> str:
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("terraform is not installed: Terraform checks skipped (HCL is still parsed)")
    return binary


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _base_env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CHECKPOINT_DISABLE": "1",  # no version check over the network
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "TF_CLI_CONFIG_FILE": str(tmp / "no-such.tfrc"),
        "TF_DATA_DIR": str(tmp / ".terraform"),
    }


@pytest.fixture(scope="module")
def aws_module(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A copy of the AWS module, initialised from the local provider mirror."""
    terraform = _terraform()
    mirror = _mirror_root()
    if mirror is None or not mirror.is_dir():
        pytest.skip("no local mirror of the hashicorp/aws provider: Terraform checks skipped")
    tmp = tmp_path_factory.mktemp("tf-aws")
    cli_config = tmp / "terraform.tfrc"
    cli_config.write_text(
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f'    path    = "{mirror}"\n'
        '    include = ["registry.terraform.io/hashicorp/*"]\n'
        "  }\n"
        "}\n"
    )
    module = tmp / "aws"
    shutil.copytree(AWS_DIR, module, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    env = {**_base_env(tmp), "TF_CLI_CONFIG_FILE": str(cli_config)}
    env.pop("TF_DATA_DIR")
    _run([terraform, "init", "-backend=false", "-no-color"], module, env)
    return module, env


def test_terraform_fmt(tmp_path: Path) -> None:
    terraform = _terraform()
    out = _run(
        [terraform, "fmt", "-check", "-recursive", "-diff", "-no-color", str(TF_DIR)],
        ROOT,
        _base_env(tmp_path),
    )
    assert out == ""


def test_aws_module_validates(aws_module: tuple[Path, dict[str, str]]) -> None:
    module, env = aws_module
    out = _run([_terraform(), "validate", "-no-color"], module, env)
    assert "The configuration is valid" in out


def test_aws_module_terraform_test(aws_module: tuple[Path, dict[str, str]]) -> None:
    """infra/terraform/aws/tests/*.tftest.hcl against a mocked AWS provider."""
    module, env = aws_module
    assert list((module / "tests").glob("*.tftest.hcl"))
    out = _run([_terraform(), "test", "-no-color"], module, env, timeout=180)
    assert "0 failed" in out and "Success!" in out, out


# --- HCL parsed with python-hcl2 (no terraform needed) -------------------------------------


def _clean(value):
    """python-hcl2 >= 8 keeps the quotes of strings and block labels, and marks blocks; drop
    both so that the checks read the same with older versions."""
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _load(module: Path) -> dict[str, list]:
    hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 is in the dev extra")
    merged: dict[str, list] = {}
    files = sorted(module.glob("*.tf"))
    assert files, f"no .tf files in {module}"
    for path in files:
        with path.open() as fh:
            for key, blocks in _clean(hcl2.load(fh)).items():
                merged.setdefault(key, []).extend(blocks)
    return merged


def _resources(doc: dict[str, list], rtype: str) -> dict[str, dict]:
    return {
        name: body
        for block in doc.get("resource", [])
        for kind, named in block.items()
        if kind == rtype
        for name, body in named.items()
    }


def _variables(doc: dict[str, list]) -> dict[str, dict]:
    return {name: body for block in doc.get("variable", []) for name, body in block.items()}


def test_prefect_module_declares_both_pools() -> None:
    doc = _load(PREFECT_DIR)
    providers = [p for block in doc["terraform"] for p in block["required_providers"]]
    assert any(p.get("prefect", {}).get("source") == "PrefectHQ/prefect" for p in providers)

    pools = {body["name"]: body for body in _resources(doc, "prefect_work_pool").values()}
    assert set(pools) == {"encore-cpu", "encore-gpu"}
    assert pools["encore-cpu"]["type"] == "process"
    gpu = pools["encore-gpu"]
    assert gpu["type"] == "ecs"
    assert gpu["concurrency_limit"] == "${var.gpu_count}"
    assert "gpu_count" in _variables(doc)

    # The GPU pool's job template runs the GPU task definition on the GPU capacity provider.
    template = "".join(
        str(block.get("gpu_base_job_template", "")) for block in doc.get("locals", [])
    )
    assert "gpu_base_job_template" in gpu["base_job_template"]
    for needle in (
        "var.gpu_task_definition_arn",
        "var.gpu_capacity_provider",
        "capacityProviderStrategy",
        "{{ task_definition_arn }}",
    ):
        assert needle in template, needle


def test_aws_module_hcl_essentials() -> None:
    """What the terraform test checks, in the source, for machines without terraform."""
    doc = _load(AWS_DIR)
    providers = [p for block in doc["terraform"] for p in block["required_providers"]]
    aws = next(p["aws"] for p in providers if "aws" in p)
    assert aws["source"] == "hashicorp/aws" and aws["version"] == "~> 5.100"

    asg = _resources(doc, "aws_autoscaling_group")["gpu"]
    assert asg["min_size"] == 0 and asg["desired_capacity"] == 0

    rds = _resources(doc, "aws_db_instance")["main"]
    assert rds["publicly_accessible"] is False and rds["engine"] == "postgres"

    block = _resources(doc, "aws_s3_bucket_public_access_block")["files"]
    assert all(
        block[k] is True
        for k in (
            "block_public_acls",
            "block_public_policy",
            "ignore_public_acls",
            "restrict_public_buckets",
        )
    )

    rules = _resources(doc, "aws_s3_bucket_lifecycle_configuration")["files"]["rule"]
    expiring = [r for r in rules if "expiration" in r]
    assert len(expiring) == 1
    assert expiring[0]["filter"][0]["prefix"].endswith("tmp/")
    assert expiring[0]["expiration"][0]["days"] == "${var.tmp_expiry_days}"

    gpu_td = _resources(doc, "aws_ecs_task_definition")["gpu"]
    assert "GPU" in gpu_td["container_definitions"] and gpu_td["requires_compatibilities"] == [
        "EC2"
    ]
    outputs = {name for block in doc["output"] for name in block}
    assert {
        "bucket_name",
        "app_repository_url",
        "gpu_repository_url",
        "gpu_task_definition_arn",
        "db_endpoint",
        "cluster_name",
    } <= outputs
