"""The deployment files: docker-compose.yml, docker-compose.cpu.yml, Dockerfile, .dockerignore.

The compose files are checked by a real Compose implementation running `config`, which parses,
validates and merges without a Docker engine: Debian's `docker-compose` package
(`apt-get install -y --no-install-recommends docker-compose`) or the `docker compose` plugin.
Without either, the tests that need one skip; the Dockerfile checks still run.

Debian bookworm's docker-compose is v1 (1.29.2). v1 cannot parse `!reset` (Compose v2.24.4+),
which docker-compose.cpu.yml needs to delete the worker's GPU reservation. Where only v1 is
present, the CPU-override test lets v1 merge the override with its `!reset` entries taken out,
then deletes those paths itself, as v2 would; with v2 present, v2 does the whole merge.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read `docker-compose config` output")

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "docker-compose.yml"
CPU = ROOT / "docker-compose.cpu.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# Variables the compose files interpolate: the tests read the files' own defaults.
_INTERPOLATED = ("TORCH_VARIANT", "GCN_IMAGE", "GCN_PORT", "POSTGRES_PASSWORD")
_RESET_V2 = (2, 24, 4)


# --------------------------------------------------------------------------- compose runners


def _version(cmd: list[str]) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [*cmd, "version", "--short"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", out.stdout)
    return tuple(int(x) for x in m.groups()) if out.returncode == 0 and m else None


def _implementations() -> list[tuple[list[str], tuple[int, ...]]]:
    found = []
    for cmd in (["docker-compose"], ["docker", "compose"]):
        if shutil.which(cmd[0]):
            v = _version(cmd)
            if v is not None:
                found.append((cmd, v))
    return found


IMPLEMENTATIONS = _implementations()
NO_COMPOSE = (
    "docker-compose is not installed (Debian: apt-get install -y --no-install-recommends "
    "docker-compose), nor the `docker compose` plugin"
)
# A v2 that knows `!reset` checks everything natively; else the first found (v1 on bookworm).
V2 = next(((c, v) for c, v in IMPLEMENTATIONS if v >= _RESET_V2), None)
COMPOSE = (V2 or IMPLEMENTATIONS[0])[0] if IMPLEMENTATIONS else None


def _run_config(files, cwd: Path, env_file: Path) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _INTERPOLATED and not k.startswith("COMPOSE_")
    }
    # An empty --env-file: a developer's .env must not change what the tests see.
    args = [*COMPOSE, "--env-file", str(env_file)]
    for f in files:
        args += ["-f", str(f)]
    args.append("config")
    out = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=120)
    assert out.returncode == 0, f"{shlex.join(args)} failed:\n{out.stderr}"
    return yaml.safe_load(out.stdout)


@pytest.fixture(scope="module")
def compose_config(tmp_path_factory):
    """`compose_config(*files, cwd=ROOT)`: the merged model `<compose> -f ... config` prints."""
    if COMPOSE is None:
        pytest.skip(NO_COMPOSE)
    env_file = tmp_path_factory.mktemp("env") / "empty.env"
    env_file.write_text("")
    return lambda *files, cwd=ROOT: _run_config(files, cwd, env_file)


# --------------------------------------------------------------------------- normalisers


def volume_mounts(service: dict) -> set[tuple[str, str]]:
    """(source, target) of each volume, from v1's short strings or v2's long form."""
    mounts = set()
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target = v.split(":")[:2]
        else:
            source, target = v.get("source"), v["target"]
        mounts.add((source, target))
    return mounts


def words(value) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(w) for w in value]


def gpu_devices(service: dict) -> list[dict]:
    deploy = service.get("deploy") or {}
    reservations = (deploy.get("resources") or {}).get("reservations") or {}
    return [d for d in reservations.get("devices") or [] if "gpu" in (d.get("capabilities") or [])]


def healthcheck_disabled(service: dict) -> bool:
    hc = service.get("healthcheck") or {}
    return hc.get("disable") is True or words(hc.get("test") or []) == ["NONE"]


# --------------------------------------------------------------------------- main file


@pytest.fixture(scope="module")
def main(compose_config) -> dict:
    return compose_config(MAIN)["services"]


def test_config_parses_with_the_expected_services(main):
    assert {"redis", "postgres", "api", "worker"} <= set(main)


def test_redis_persists_with_an_append_only_file_on_a_volume(main):
    redis = main["redis"]
    assert redis["image"].startswith("redis:7")
    command = words(redis["command"])
    assert "--appendonly" in command and command[command.index("--appendonly") + 1] == "yes"
    assert any(target == "/data" for _, target in volume_mounts(redis))
    assert "redis-cli" in words(redis["healthcheck"]["test"])


def test_worker_reserves_one_nvidia_gpu(main):
    [gpu] = gpu_devices(main["worker"])
    assert gpu["driver"] == "nvidia"
    assert int(gpu["count"]) == 1
    assert main["worker"]["environment"]["GCN_DEVICE"] == "cuda"


def test_api_and_worker_run_their_commands_from_one_image(main):
    api, worker = main["api"], main["worker"]
    assert words(api["command"])[:2] == ["gcn", "serve"]
    assert words(worker["command"]) == ["gcn", "worker"]
    assert api["image"] == worker["image"]
    assert api["build"]["args"]["TORCH_VARIANT"] == worker["build"]["args"]["TORCH_VARIANT"]


def test_api_and_worker_share_the_data_volume(main):
    api, worker = main["api"], main["worker"]
    assert ("gcn-data", "/data") in volume_mounts(api)
    assert ("gcn-data", "/data") in volume_mounts(worker)
    for service in (api, worker):
        assert service["environment"]["GCN_DATA_DIR"] == "/data"


def test_api_has_a_healthcheck_on_healthz_and_the_worker_none(main):
    test = " ".join(words(main["api"]["healthcheck"]["test"]))
    assert "/healthz" in test and "8000" in test
    # The image's HEALTHCHECK probes HTTP, which a worker does not serve.
    assert healthcheck_disabled(main["worker"])


def test_env_points_to_redis_and_postgres(main):
    for name in ("api", "worker"):
        env = main[name]["environment"]
        assert env["GCN_BROKER_URL"] == "redis://redis:6379/0"
        assert env["GCN_DATABASE_URL"].startswith("postgresql")
        assert "@postgres:5432/" in env["GCN_DATABASE_URL"]


def test_api_and_worker_wait_for_healthy_redis_and_postgres(main):
    for name in ("api", "worker"):
        depends = main[name]["depends_on"]
        for dep in ("redis", "postgres"):
            assert depends[dep]["condition"] == "service_healthy"
    assert main["postgres"]["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(words(main["postgres"]["healthcheck"]["test"]))
    assert any(t == "/var/lib/postgresql/data" for _, t in volume_mounts(main["postgres"]))


def test_the_commented_second_gpu_worker_works_when_uncommented(compose_config, tmp_path):
    """The `worker-gpu1` recipe in docker-compose.yml's comments, uncommented, is valid."""
    lines = MAIN.read_text().splitlines()
    start = lines.index("  # worker-gpu1:")
    end = start
    while end < len(lines) and lines[end].startswith("  # "):
        end += 1
    block = [line.replace("  # ", "  ", 1) for line in lines[start:end]]
    (tmp_path / "docker-compose.yml").write_text("\n".join(lines[:start] + block + lines[end:]))
    services = compose_config(tmp_path / "docker-compose.yml", cwd=tmp_path)["services"]

    [gpu] = gpu_devices(services["worker-gpu1"])
    assert gpu["driver"] == "nvidia"
    assert [str(i) for i in gpu["device_ids"]] == ["1"]
    assert gpu.get("count") in (None, 0)  # device_ids and count exclude each other
    assert words(services["worker-gpu1"]["command"]) == ["gcn", "worker"]
    assert volume_mounts(services["worker-gpu1"]) == volume_mounts(services["worker"])
    assert services["worker-gpu1"]["environment"] == services["worker"]["environment"]


# --------------------------------------------------------------------------- CPU override


class _Reset:
    """What `!reset` stands for while the override is read here."""


class _ResetLoader(yaml.SafeLoader):
    pass


_ResetLoader.add_constructor("!reset", lambda loader, node: _Reset())


def _reset_paths(tree, path=()) -> list[tuple[str, ...]]:
    if isinstance(tree, _Reset):
        return [path]
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in _reset_paths(v, (*path, k))]
    return []


def _without(tree, paths):
    for path in paths:
        node = tree
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        else:
            if isinstance(node, dict):
                node.pop(path[-1], None)
    return tree


def test_cpu_override_resets_exactly_the_worker_gpu_reservation():
    override = yaml.load(CPU.read_text(), Loader=_ResetLoader)
    assert _reset_paths(override) == [
        ("services", "worker", "deploy", "resources", "reservations", "devices")
    ]


@pytest.fixture(scope="module")
def cpu(compose_config, tmp_path_factory) -> dict:
    if V2 is not None:
        return compose_config(MAIN, CPU)["services"]
    # v1: merge everything but the `!reset` entries, then delete those paths as v2 would.
    override = yaml.load(CPU.read_text(), Loader=_ResetLoader)
    paths = _reset_paths(override)
    stripped = tmp_path_factory.mktemp("cpu") / "docker-compose.cpu.yml"
    stripped.write_text(yaml.safe_dump(_without(override, paths)))
    merged = compose_config(MAIN, stripped)
    return _without(merged, paths)["services"]


def test_cpu_override_drops_the_gpu_reservation(cpu):
    assert gpu_devices(cpu["worker"]) == []
    assert cpu["worker"]["environment"]["GCN_DEVICE"] == "cpu"


def test_cpu_override_builds_the_cpu_torch_wheel(cpu):
    for name in ("api", "worker"):
        assert cpu[name]["build"]["args"]["TORCH_VARIANT"] == "cpu"
        assert cpu[name]["image"].endswith(":cpu")


def test_cpu_override_keeps_the_rest(cpu, main):
    assert words(cpu["worker"]["command"]) == ["gcn", "worker"]
    assert ("gcn-data", "/data") in volume_mounts(cpu["api"])
    assert ("gcn-data", "/data") in volume_mounts(cpu["worker"])
    assert cpu["worker"]["environment"]["GCN_BROKER_URL"] == "redis://redis:6379/0"
    assert cpu["api"]["healthcheck"] == main["api"]["healthcheck"]
    assert words(cpu["redis"]["command"]) == words(main["redis"]["command"])


# --------------------------------------------------------------------------- Dockerfile


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, args = current.partition(" ")
        out.append((keyword.upper(), args.strip()))
        current = ""
    return out


def _stages(text: str) -> list[dict]:
    """Each build stage: its base, ARG defaults (global ones too) and instructions."""
    global_args: dict[str, str] = {}
    stages: list[dict] = []
    for keyword, args in _instructions(text):
        if keyword == "FROM":
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m.group(1), m.group(0)), args)
            stages.append({"from": base.split()[0], "args": {}, "steps": []})
        elif keyword == "ARG":
            name, _, default = args.partition("=")
            (stages[-1]["args"] if stages else global_args)[name] = default
        if stages:
            stages[-1]["steps"].append((keyword, args))
    return stages


def _expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), value)


@pytest.fixture(scope="module")
def stages() -> list[dict]:
    return _stages(DOCKERFILE.read_text())


def test_dockerfile_builds_from_python_311_slim(stages):
    assert {s["from"] for s in stages} == {"python:3.11-slim"}


def test_dockerfile_torch_variant_arg_picks_the_torch_index_before_pip_install(stages):
    build = next(
        s for s in stages if "TORCH_VARIANT" in s["args"] and "pip install" in str(s["steps"])
    )
    assert build["args"]["TORCH_VARIANT"] == "cpu"
    runs = [_expand(a, build["args"]) for k, a in build["steps"] if k == "RUN"]
    torch_step = next(i for i, r in enumerate(runs) if "download.pytorch.org/whl/cpu" in r)
    assert "torch==2.13.0" in runs[torch_step]
    project_step = next(i for i, r in enumerate(runs) if re.search(r"pip install \S*/src", r))
    assert torch_step < project_step


def test_dockerfile_runs_as_a_non_root_user_owning_the_data_volume(stages):
    final = stages[-1]
    users = [_expand(a, final["args"]) for k, a in final["steps"] if k == "USER"]
    assert users, "the final stage sets no USER, so it runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", "")
    runs = " ".join(a for k, a in final["steps"] if k == "RUN")
    assert re.search(r"chown \S+ /data", runs)
    assert any(k == "VOLUME" and "/data" in a for k, a in final["steps"])


def test_dockerfile_healthcheck_and_default_command_serve_the_api(stages):
    final = stages[-1]
    [health] = [a for k, a in final["steps"] if k == "HEALTHCHECK"]
    assert "/healthz" in health
    [cmd] = [a for k, a in final["steps"] if k == "CMD"]
    assert json.loads(cmd)[:2] == ["gcn", "serve"]


def test_dockerignore_keeps_the_package_and_drops_local_state():
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".env"} <= patterns
    needed = {"pyproject.toml", "README.md", "app", "worker", "service", "models", "*"}
    assert not needed & patterns
