"""The Docker image and compose file, checked without a Docker engine (none runs on these machines).

The Dockerfile is parsed with the `dockerfile` package (BuildKit's own parser) and the compose file
with PyYAML; the assertions are the properties docker/README.md promises, so the files cannot rot
silently (a renamed entry point, a lost GPU reservation, a dataset mounted writable, ...).
"""

import re
import shlex
from pathlib import Path

import dockerfile
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker" / "compose.yaml"
WORKDIR = "/workspace/maskrcnn"


@pytest.fixture(scope="module")
def commands():
    return dockerfile.parse_file(str(DOCKERFILE))


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def _args(commands) -> dict[str, str]:
    """ARG defaults (quotes removed as Docker does); an ARG without a default maps to None."""
    args = {}
    for c in commands:
        if c.cmd == "ARG":
            name, _, default = c.value[0].partition("=")
            args.setdefault(name, default.strip('"') if default else None)
    return args


def _expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], text)


def _index(commands, cmd: str, predicate=lambda c: True) -> int:
    for i, c in enumerate(commands):
        if c.cmd == cmd and predicate(c):
            return i
    raise AssertionError(f"no {cmd} matching the condition in {DOCKERFILE}")


def test_base_image_is_a_build_arg_defaulting_to_official_pytorch_devel(commands):
    froms = [c for c in commands if c.cmd == "FROM"]
    # The wheel stage (mounted only) and the image itself, built on BASE_IMAGE.
    assert [list(f.value) for f in froms] == [["${TORCH_WHEELS}", "AS", "torch-wheels"], ["${BASE_IMAGE}"]]
    args = _args(commands)
    assert args["TORCH_WHEELS"] == "scratch"  # the CUDA image brings its own torch
    for name in ("TORCH_VERSION", "CUDA_VERSION", "CUDNN_VERSION"):
        assert args.get(name), f"build arg {name} needs a default"
        assert "${" + name + "}" in args["BASE_IMAGE"]
    image = _expand(args["BASE_IMAGE"], args)
    assert re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-devel", image), image
    assert args["TORCH_VERSION"].startswith("2.")
    assert int(args["TORCH_VERSION"].split(".")[1]) >= 11  # the code supports torch 2.11+


def test_cpu_variant_takes_torch_from_mounted_wheels_only_when_the_base_has_none(commands):
    install = commands[_index(commands, "RUN", lambda c: "--find-links /wheels" in c.value[0])]
    assert "--mount=type=bind,from=torch-wheels,target=/wheels" in install.flags
    line = install.value[0]
    assert line.startswith('python -c "import torch"') and "||" in line  # the CUDA image's torch is kept
    assert "--no-index" in line and "torch==${TORCH_VERSION}" in line
    # The torch check after it asks for CUDA only when the kernels are built with it.
    check = commands[_index(commands, "RUN", lambda c: "torch.version.cuda" in c.value[0])].value[0]
    assert "${FORCE_CUDA}" in check


def test_no_frontend_pull_and_certificates_only_as_a_build_secret(commands):
    # A `# syntax=` line makes BuildKit pull the frontend image from a registry.
    assert not re.search(r"^#\s*syntax\s*=", DOCKERFILE.read_text(), re.MULTILINE)
    pip = commands[_index(commands, "RUN", lambda c: "pip install -c" in c.value[0])]
    assert "--mount=type=secret,id=ca-certificates" in pip.flags
    assert "PIP_CERT=/run/secrets/ca-certificates" in pip.value[0]
    for c in commands:
        if c.cmd in ("COPY", "ADD", "ENV"):
            assert not any(re.search(r"\.(crt|pem)\b|ca-certificates", v) for v in c.value), c.original


def test_extension_built_with_cuda_for_volta_to_hopper(commands):
    args = _args(commands)
    arch = args["TORCH_CUDA_ARCH_LIST"].replace(" ", ";").split(";")
    for cc in ("7.0", "7.5", "8.0", "8.6", "8.9"):
        assert cc in arch
    assert "9.0" in arch or "9.0+PTX" in arch
    # nvcc 13 cannot compile for Volta: 7.0 in the list requires a CUDA 12 base image.
    if "7.0" in arch:
        assert int(args["CUDA_VERSION"].split(".")[0]) <= 12
    build = _index(commands, "RUN", lambda c: "build_ext" in c.value[0])
    line = commands[build].value[0]
    assert args["FORCE_CUDA"] == "1"  # the default image is the CUDA one
    assert 'FORCE_CUDA="${FORCE_CUDA}"' in line
    assert "TORCH_CUDA_ARCH_LIST" in line
    assert "setup.py" in line
    # ... and the build is checked to hold CUDA kernels (setup.py would quietly build CPU-only).
    check = _index(commands, "RUN", lambda c: "_dispatch_has_kernel_for_dispatch_key" in c.value[0])
    assert check > build and "has('CUDA')" in commands[check].value[0]
    assert "'${FORCE_CUDA}' != '1' or has('CUDA')" in commands[check].value[0]


def test_runs_as_non_root_user(commands):
    users = [c for c in commands if c.cmd == "USER"]
    assert users, "the image must switch to a non-root user"
    final = users[-1].value[0].split(":")[0]
    assert final not in ("root", "0")
    args = _args(commands)
    assert "USER_ID" in args and "GROUP_ID" in args
    assert final in ("${USER_ID}", "maskrcnn")
    assert any(c.cmd == "RUN" and "useradd" in c.value[0] and "${USER_ID}" in c.value[0] for c in commands)


def test_dependencies_cached_before_the_source_is_copied(commands):
    copies = [(i, c) for i, c in enumerate(commands) if c.cmd == "COPY"]
    pyproject = next(i for i, c in copies if "pyproject.toml" in c.value[:-1])
    source = next(i for i, c in copies if c.value[0] == ".")
    pip = _index(commands, "RUN", lambda c: "pip install -c" in c.value[0])
    assert pyproject < pip < source
    # The dependencies come from pyproject.toml and keep the base image's torch.
    line = commands[pip].value[0]
    assert "pyproject.toml" in line and "torch" in line and "-c " in line
    assert "constraints.txt" not in line  # its pins are for the CPU development machine
    assert any(f.startswith("--mount=type=cache") and ".cache/pip" in f for f in commands[pip].flags)
    assert not any(c.cmd == "ENV" and "PIP_NO_CACHE_DIR" in c.value for c in commands)


def test_entry_point_is_the_training_script_in_the_repo(commands):
    entry = [c for c in commands if c.cmd == "ENTRYPOINT"]
    assert entry and entry[-1].json, "ENTRYPOINT must be in exec (JSON) form"
    argv = list(entry[-1].value)
    assert argv[0] == "python"
    assert argv[1] == "tools/train.py"
    assert (REPO / argv[1]).is_file(), f"entry point {argv[1]} is missing from the repo"
    workdirs = [c.value[0] for c in commands if c.cmd == "WORKDIR"]
    assert workdirs[-1] == WORKDIR


def test_dockerignore_keeps_host_builds_out_of_the_context():
    patterns = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    # The host's CPU build of maskrcnn/_C*.so would overwrite the image's CUDA build.
    assert "**/*.so" in patterns
    for name in (".venv", "build", "outputs", "datasets", ".git"):
        assert name in patterns


def _gib(size: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)b?", str(size).strip().lower())
    assert match, f"cannot read shm_size {size!r}"
    value, unit = float(match.group(1)), match.group(2)
    return value * {"": 2**-30, "k": 2**-20, "m": 2**-10, "g": 1.0}[unit]


def _mounts(service) -> dict[str, tuple[str, str]]:
    """container path -> (host path, mode) of a service's short-syntax volumes."""
    mounts = {}
    for volume in service.get("volumes", []):
        # Split on ':' outside ${...} (defaults like ${VAR:-x} contain colons).
        parts = re.findall(r"(?:\$\{[^}]*\}|[^:])+", volume)
        host, target, mode = (parts + ["rw"])[:3]
        mounts[target] = (host, mode)
    return mounts


@pytest.mark.parametrize("name", ["train", "train-multigpu"])
def test_training_services_get_gpus_shm_and_mounts(compose, name):
    service = compose["services"][name]
    # The NVIDIA runtime, not a `deploy` reservation, which compose.cpu.yaml could not remove.
    assert service["runtime"] == "nvidia" and "deploy" not in service
    assert service["environment"]["NVIDIA_VISIBLE_DEVICES"] == "${NVIDIA_VISIBLE_DEVICES:-all}"
    assert _gib(service["shm_size"]) >= 8
    assert service["build"]["dockerfile"] == "docker/Dockerfile"
    assert (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DOCKERFILE
    mounts = _mounts(service)
    for variable in ("COCO_ROOT", "VOC_ROOT"):
        target, (host, mode) = next((t, m) for t, m in mounts.items() if variable in m[0])
        assert mode == "ro", f"{variable} must be mounted read-only"
        assert target.startswith(WORKDIR + "/datasets/")
    outputs = mounts[WORKDIR + "/outputs"]
    assert outputs[1] == "rw"


def test_multigpu_service_runs_torchrun_on_the_training_script(compose):
    argv = compose["services"]["train-multigpu"]["entrypoint"]
    assert argv[0] == "torchrun"
    assert any(a.startswith("--nproc_per_node") for a in argv)
    assert argv[-1] == "tools/train.py"


def test_tensorboard_service_reads_the_training_outputs(compose):
    services = compose["services"]
    tensorboard = services["tensorboard"]
    argv = tensorboard["entrypoint"]
    argv = shlex.split(argv) if isinstance(argv, str) else argv
    assert argv[0] == "tensorboard"
    logdir = argv[argv.index("--logdir") + 1]
    train_outputs = {host for t, (host, _) in _mounts(services["train"]).items() if "outputs" in t or "multirun" in t}
    served = {host for t, (host, _) in _mounts(tensorboard).items() if t.startswith(logdir)}
    assert train_outputs and train_outputs <= served
    assert any(p.endswith(":6006") for p in tensorboard["ports"])


def _override(base: dict, override: dict) -> dict:
    """Compose's merge of an override file for the keys used here: mappings merge, scalars replace,
    volumes add (by container path)."""
    merged = dict(base)
    for key, value in override.items():
        if key == "volumes":
            merged[key] = list({_target(v): v for v in base.get(key, []) + value}.values())
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _override(base[key], value)
        else:
            merged[key] = value
    return merged


def _target(volume: str) -> str:
    return re.findall(r"(?:\$\{[^}]*\}|[^:])+", volume)[1]


def test_cpu_override_turns_every_service_into_the_cpu_image(compose):
    cpu = yaml.safe_load((COMPOSE.parent / "compose.cpu.yaml").read_text())
    torch_pin = re.search(r"^torch==(\S+)", (REPO / "constraints.txt").read_text(), re.MULTILINE).group(1)
    assert set(cpu["services"]) == set(compose["services"])
    for name, override in cpu["services"].items():
        service = _override(compose["services"][name], override)
        assert service["image"] == "maskrcnn:cpu"
        args = service["build"]["args"]
        assert args["FORCE_CUDA"] == "0" and args["TORCH_VERSION"] == torch_pin
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        # Host networking: no bridge network for compose to create (make test-docker's machine has none).
        assert service["network_mode"] == "host"
        assert service.get("runtime", "runc") == "runc"
    train = _override(compose["services"]["train"], cpu["services"]["train"])
    host, mode = _mounts(train)[WORKDIR + "/datasets/synthetic_simple"]
    assert "SYNTHETIC_ROOT" in host and mode == "ro"
    assert _gib(train["shm_size"]) >= 1


def test_test_docker_is_not_part_of_make_test():
    makefile = (REPO / "Makefile").read_text()
    prerequisites = re.search(r"^test:(.*)$", makefile, re.MULTILINE).group(1).split()
    assert "test-docker" not in prerequisites
    assert re.search(r"^test-docker:\n\tbash docker/test_docker.sh$", makefile, re.MULTILINE)
