"""The Terraform under infra/terraform, checked offline.

With the `terraform` binary and a local filesystem mirror of the hashicorp/aws provider (see
STACK.md), the AWS module is formatted, initialised, validated and run through its
`terraform test` file (mocked provider, real assertions on values). Without them those steps
are skipped with the reason. Both modules are also parsed with python-hcl2, which needs
neither; the Prefect module can only be checked that way, because its provider cannot be
installed offline.

checkov (static scan of the Terraform and both Dockerfiles, against the allowlist explained in
infra/terraform/README.md) and hadolint (Dockerfile lint) run from their own virtual
environment, which `scripts/setup --dev` makes (checkov replaces python-hcl2's `hcl2` package,
so it cannot share the project's); without it those tests are skipped with the reason.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TF_DIR = ROOT / "infra" / "terraform"
AWS_DIR = TF_DIR / "aws"
PREFECT_DIR = TF_DIR / "prefect"
DOCKERFILES = (ROOT / "gpu_worker" / "Dockerfile", ROOT / "infra" / "docker" / "app.Dockerfile")
README = TF_DIR / "README.md"

# Findings of checkov accepted on purpose; each one is explained in infra/terraform/README.md
# (section "Static scan"), which test_checkov_allowlist_is_explained checks.
CHECKOV_ALLOWED = {
    "CKV_AWS_18",  # S3 access logging
    "CKV_AWS_21",  # S3 versioning
    "CKV_AWS_144",  # S3 cross-region replication
    "CKV_AWS_145",  # S3 KMS encryption
    "CKV2_AWS_62",  # S3 event notifications
    "CKV_AWS_300",  # lifecycle rule without abort-multipart (another rule does it)
    "CKV_AWS_136",  # ECR KMS encryption
    "CKV_AWS_149",  # Secrets Manager customer KMS key
    "CKV2_AWS_57",  # Secrets Manager automatic rotation
    "CKV_AWS_26",  # SNS encryption
    "CKV_AWS_157",  # RDS Multi-AZ
    "CKV_AWS_118",  # RDS enhanced monitoring
    "CKV_AWS_129",  # RDS logs exported
    "CKV_AWS_161",  # RDS IAM authentication
    "CKV_AWS_353",  # RDS performance insights
    "CKV2_AWS_30",  # RDS query logging
    "CKV_AWS_158",  # CloudWatch log groups KMS
    "CKV_AWS_338",  # log retention of a year
    "CKV_AWS_65",  # ECS container insights
    "CKV_AWS_336",  # read-only root filesystems
    "CKV2_AWS_11",  # VPC flow logs
    "CKV2_AWS_12",  # default security group
    "CKV_AWS_23",  # security group rule description
    "CKV_AWS_394",  # availability zones data source
    "CKV_DOCKER_2",  # Dockerfile HEALTHCHECK
}

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
        "var.gpu_task_family",
        "var.gpu_capacity_provider",
        "capacityProviderStrategy",
        "{{ task_definition }}",
    ):
        assert needle in template, needle
    # The pool names the family (latest revision), never an ARN with a revision; the settings
    # that prefect-aws 0.7 ignores are not offered.
    variables = _variables(doc)
    assert "gpu_task_definition_arn" not in variables
    assert variables["gpu_task_family"]["default"] == "encore-gpu"
    assert "task_start_timeout_seconds" not in template

    # The CPU pool has a concurrency limit, and the provider authenticates to the API.
    assert pools["encore-cpu"]["concurrency_limit"] == "${var.cpu_concurrency}"
    assert variables["cpu_concurrency"]["default"] >= 1
    provider = next(p["prefect"] for p in doc["provider"] if "prefect" in p)
    assert provider["basic_auth_key"] == "${var.prefect_basic_auth_key}"


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
        "gpu_task_family",
        "observer_queue_name",
        "db_endpoint",
        "cluster_name",
    } <= outputs

    repos = _resources(doc, "aws_ecr_repository")
    assert {r["image_tag_mutability"] for r in repos.values()} == {"IMMUTABLE"}
    assert "default" not in _variables(doc)["gpu_image_tag"]

    # The observer: rule -> queue, with a dead-letter queue.
    rule = _resources(doc, "aws_cloudwatch_event_rule")["ecs_task_state"]
    assert "ECS Task State Change" in rule["event_pattern"]
    assert "aws_ecs_cluster.main.arn" in rule["event_pattern"]
    assert _resources(doc, "aws_cloudwatch_event_target")["ecs_task_state"]["arn"] == (
        "${aws_sqs_queue.ecs_events.arn}"
    )
    assert (
        "aws_sqs_queue.ecs_events_dlq.arn"
        in _resources(doc, "aws_sqs_queue")["ecs_events"]["redrive_policy"]
    )
    assert _resources(doc, "aws_cloudwatch_metric_alarm")["gpu_hours"]["metric_name"] == (
        "GroupInServiceInstances"
    )
    assert "monthly" in _resources(doc, "aws_budgets_budget")


# --- checkov and hadolint, from their own virtual environment ------------------------------


def _tool(name: str) -> str:
    """A tool from the infra-tools virtual environment that `scripts/setup --dev` makes."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = Path(os.environ.get("ENCORE_INFRA_TOOLS", cache / "encore" / "infra-tools"))
    binary = venv / "bin" / name
    if not binary.is_file():
        pytest.skip(f"{name} is not installed in {venv}: run scripts/setup --dev ({name} skipped)")
    return str(binary)


def test_checkov_finds_nothing_outside_the_allowlist(tmp_path: Path) -> None:
    checkov = _tool("checkov")
    args = [checkov, "--skip-download", "--quiet", "--compact", "-o", "json"]
    # Directories only: checkov ignores -f when -d is given.
    for folder in sorted({TF_DIR, *(d.parent for d in DOCKERFILES)}):
        args += ["-d", str(folder)]
    args += ["--framework", "terraform", "dockerfile"]
    env = {**_base_env(tmp_path), "HOME": str(tmp_path), "BC_SKIP_MAPPING": "TRUE"}
    proc = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    # One JSON document per scanned directory, one after the other.
    reports, decoder, pos, out = [], json.JSONDecoder(), 0, proc.stdout
    while pos < len(out):
        if out[pos].isspace():
            pos += 1
            continue
        doc, pos = decoder.raw_decode(out, pos)
        reports += doc if isinstance(doc, list) else [doc]
    scanned = {r.get("check_type") for r in reports}
    assert {"terraform", "dockerfile"} <= scanned, scanned
    failed = [
        f"{f['check_id']} {f['resource']} ({f['file_path']}): {f['check_name']}"
        for report in reports
        for f in report.get("results", {}).get("failed_checks", [])
        if f["check_id"] not in CHECKOV_ALLOWED
    ]
    assert not failed, "checkov findings outside the allowlist:\n" + "\n".join(failed)


def test_checkov_allowlist_is_explained() -> None:
    text = README.read_text()
    missing = sorted(check for check in CHECKOV_ALLOWED if f"`{check}`" not in text)
    assert not missing, f"explain these allowed checkov findings in {README}: {missing}"


def test_hadolint_dockerfiles() -> None:
    hadolint = _tool("hadolint")
    proc = subprocess.run(
        [hadolint, "--no-color", *map(str, DOCKERFILES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gpu_image_layers_and_user() -> None:
    """Dependencies before weights before code; not root; a base that matches torch's CUDA."""
    lines = [
        line.strip()
        for line in (ROOT / "gpu_worker" / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM "))]
    assert final == "FROM deps"
    tail = lines[lines.index(final) :]
    order = [
        next(i for i, line in enumerate(tail) if line.startswith("COPY --from=weights")),
        next(i for i, line in enumerate(tail) if line.startswith("COPY flows")),
    ]
    assert order == sorted(order)
    assert tail[-2].startswith("USER ") and tail[-2] not in ("USER root", "USER 0")
    deps = lines[: lines.index("FROM deps AS weights")]
    assert not any(line.startswith(("COPY flows", "COPY bots", "COPY gpu_worker")) for line in deps)
    assert any('"torch==2.13.0"' in line for line in deps)
    assert not any("nvidia/cuda:12" in line for line in lines)
