"""The README documents every setting, with its default."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from adapters.api import ApiSettings
from adapters.archiver.settings import ArchiverSettings
from adapters.gateway import GatewaySettings
from processor.settings import AdapterSettings, ProcessorSettings, describe

README = (Path(__file__).parent.parent / "README.md").read_text()
SERVICES = {
    ProcessorSettings: "ocpp-processor",
    AdapterSettings: "ocpp-adapter",
    ApiSettings: "ocpp-api",
    GatewaySettings: "ocpp-gateway",
    ArchiverSettings: "ocpp-archiver run",
}


def table_rows(service: str) -> list[str]:
    """The rows of the settings table under the line that opens with
    `` `service` `` (a setting's default may differ between services)."""
    lines = README.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"`{service}`"))
    rows = []
    for line in lines[start + 1 :]:
        if rows and not line.startswith("|"):
            break
        if line.startswith("| `"):
            rows.append(line)
    return rows


@pytest.mark.parametrize("cls", list(SERVICES))
def test_every_setting_is_documented_with_its_default(cls: type) -> None:
    own = table_rows(SERVICES[cls])
    everywhere = [line for line in README.splitlines() if line.startswith("| `")]
    for env, flag, default, _ in describe(cls):
        # Its own table's row, else the row of a table it says it shares.
        row = next((line for line in own + everywhere if line.startswith(f"| `{env}` ")), None)
        assert row is not None, f"{env} is not in the README"
        assert f"`{flag}`" in row
        if default != "":
            shown = str(default).lower() if isinstance(default, bool) else default
            assert f"`{shown}`" in row, f"{env}: default {default!r} not in {row!r}"


def test_readme_opens_with_the_two_commands() -> None:
    block = README.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split("#")[0].strip() for line in block] == ["make demo", "make test"]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="needs docker-compose")
def test_the_override_that_swaps_in_your_own_ws_server_is_valid(tmp_path: Path) -> None:
    after = README.split("docker-compose.override.yml", 1)[1]
    snippet = after.split("```yaml\n", 1)[1].split("```", 1)[0]
    override = tmp_path / "override.yml"
    override.write_text(snippet)
    root = Path(__file__).parent.parent
    done = subprocess.run(
        ["docker-compose", "-f", str(root / "docker-compose.yml"), "-f", str(override),
         "config"],
        capture_output=True, text=True, cwd=root, timeout=60,
        env={**os.environ, "OCPP_API_TOKEN": "a-token-of-the-test",  # compose requires both
             "OCPP_CHARGERS_FILE": "./deploy/chargers.example"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "your-registry/ws-server" in done.stdout
