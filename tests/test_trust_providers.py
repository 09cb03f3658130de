"""The provider plugin loader (engine/providers.py) on real files: refusals, skipped broken
modules, overrides, sync and async methods, timeouts, and entry points of an installed
distribution (a dist-info on a temporary path, read by a real subprocess)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from scheduler.engine.providers import ProviderCallError, load_providers

MOCK = Path(__file__).parent / "providers" / "mock_stripe.py"


class Log:
    """Collects (level, event, fields) instead of printing."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        def record(event: str, **fields: Any) -> None:
            self.lines.append((level, event, fields))
        return record

    def named(self, event: str) -> list[tuple[str, dict[str, Any]]]:
        return [(level, fields) for level, name, fields in self.lines if name == event]


def plugin_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    directory = tmp_path / "plugins"
    directory.mkdir(mode=0o755, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text))
    return directory


def names(registry: Any) -> set[str]:
    return {f"{p['type']}:{p['name']}" for p in registry.listing()}


IDENTITY = """
    class P:
        name = "{name}"
        type = "identity"
        tag = "{tag}"
        def resolve_session(self, request, ctx):
            return {{"ok": True, "session": {{"tag": self.tag}}}}
    provider = P()
"""


def test_a_world_writable_directory_is_refused_and_nothing_is_loaded(tmp_path) -> None:
    loads = tmp_path / "loads"
    directory = plugin_dir(tmp_path, {"mock_stripe.py": MOCK.read_text()})
    directory.chmod(0o777)
    os.environ["MOCK_STRIPE_LOADS"] = str(loads)
    log = Log()
    try:
        registry = load_providers(directory, log, entry_points=[])
    finally:
        del os.environ["MOCK_STRIPE_LOADS"]
    assert registry.listing() == []
    ((level, fields),) = log.named("provider.directory_refused")
    assert level == "error" and "world-writable (mode 0777)" in fields["reason"]
    assert not loads.exists()


def test_a_world_writable_file_is_skipped(tmp_path) -> None:
    directory = plugin_dir(tmp_path, {"a.py": IDENTITY.format(name="a", tag="1"),
                                      "b.py": IDENTITY.format(name="b", tag="1")})
    (directory / "a.py").chmod(0o666)
    log = Log()
    registry = load_providers(directory, log, entry_points=[])
    assert names(registry) == {"identity:b"}
    ((level, fields),) = log.named("provider.file_refused")
    assert level == "error" and fields["file"].endswith("a.py")


def test_a_broken_module_is_logged_and_skipped_and_the_others_load(tmp_path) -> None:
    directory = plugin_dir(tmp_path, {
        "a_syntax.py": "def (:\n",
        "b_raises.py": "raise RuntimeError('no config')\n",
        "c_nothing.py": "x = 1\n",
        "d_bad_type.py": "from types import SimpleNamespace as N\nprovider = N(name='d', type='oracle')\n",
        "e_no_method.py": ("from types import SimpleNamespace as N\n"
                           "provider = N(name='e', type='authorization')\n"),
        "mock_stripe.py": MOCK.read_text(),
        "notes.txt": "not a module",
    })
    log = Log()
    registry = load_providers(directory, log, entry_points=[])
    assert names(registry) == {"identity:mock-stripe", "authorization:mock-policy",
                               "proof-verifier:mock-verifier"}
    failures = {Path(f["origin"]).name: f["error"] for _, f in log.named("provider.load_failed")}
    assert set(failures) == {"a_syntax.py", "b_raises.py", "c_nothing.py", "d_bad_type.py",
                             "e_no_method.py"}
    assert "no config" in failures["b_raises.py"]
    assert 'unknown type "oracle"' in failures["d_bad_type.py"]
    assert failures["e_no_method.py"] == "provider e (authorization) lacks authorize"
    assert all(level == "error" for level, _ in log.named("provider.load_failed"))


def test_later_files_override_earlier_ones_by_name(tmp_path) -> None:
    directory = plugin_dir(tmp_path, {"b.py": IDENTITY.format(name="same", tag="second"),
                                      "a.py": IDENTITY.format(name="same", tag="first")})
    log = Log()
    registry = load_providers(directory, log, entry_points=[])
    provider = registry.identity("same")
    assert provider is not None and provider.target.tag == "second"
    assert log.named("provider.replaced")[0][1]["replaced"].endswith("a.py")


def test_modules_load_by_path_not_through_sys_path(tmp_path, monkeypatch) -> None:
    """A plugin cannot import a sibling module: its directory is not on sys.path, nor is the
    working directory (where a same-named module waits)."""
    uses_helper = "import helper\n" + textwrap.dedent(IDENTITY.format(name="h", tag=""))
    directory = plugin_dir(tmp_path, {"helper.py": "VALUE = 1\n", "uses_helper.py": uses_helper})
    monkeypatch.chdir(directory)
    before = list(sys.path)
    log = Log()
    registry = load_providers(directory, log, entry_points=[])
    assert sys.path == before
    assert registry.identity("h") is None
    errors = {Path(f["origin"]).name: f["error"] for _, f in log.named("provider.load_failed")}
    assert "No module named 'helper'" in errors["uses_helper.py"]
    assert "helper" not in sys.modules


def test_sync_and_async_methods_camel_case_names_and_timeouts(tmp_path) -> None:
    directory = plugin_dir(tmp_path, {"p.py": """
        import asyncio, time
        class P:
            name = "p"
            type = "identity"
            async def resolve_session(self, request, ctx):
                return {"ok": True, "via": "async"}
            def prepareHandoff(self, session, handoff, ctx):
                return {"prepared": True, "via": "sync"}
            def materialize(self, session, presentation, ctx):
                time.sleep(1.5)
            async def cleanup(self, state, ctx):
                await asyncio.sleep(1.5)
            def describe_session(self, session, ctx):
                raise ValueError("cannot describe")
        provider = P()
    """})
    registry = load_providers(directory, Log(), timeout_s=0.3, entry_points=[])
    provider = registry.identity("p")
    assert provider is not None

    async def calls() -> None:
        assert (await registry.call(provider, "resolve_session", {}, {}))["via"] == "async"
        assert (await registry.call(provider, "prepare_handoff", {}, {}, {}))["via"] == "sync"
        with pytest.raises(ProviderCallError, match=r"materialize did not answer within 0\.3s"):
            await registry.call(provider, "materialize", {}, {}, {})
        with pytest.raises(ProviderCallError, match=r"cleanup did not answer within 0\.3s"):
            await registry.call(provider, "cleanup", {}, {})
        with pytest.raises(ProviderCallError, match="cannot describe"):
            await registry.call(provider, "describe_session", {}, {})
        with pytest.raises(ProviderCallError, match="has no verify_proof"):
            await registry.call(provider, "verify_proof", {}, {})

    asyncio.run(calls())


def test_no_directory_and_a_missing_directory(tmp_path) -> None:
    assert load_providers(None, Log(), entry_points=[]).listing() == []
    log = Log()
    assert load_providers(tmp_path / "absent", log, entry_points=[]).listing() == []
    assert "cannot read it" in log.named("provider.directory_refused")[0][1]["reason"]


def test_entry_points_of_an_installed_distribution_load_and_files_override_them(tmp_path) -> None:
    site = tmp_path / "site"
    (site / "acme_providers-1.0.dist-info").mkdir(parents=True)
    (site / "acme_providers-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: acme-providers\nVersion: 1.0\n")
    (site / "acme_providers-1.0.dist-info" / "entry_points.txt").write_text(
        "[openclaw_scheduler.providers]\nacme = acme_providers:provider\n"
        "broken = acme_providers:missing\nshared = acme_providers:shared\n")
    (site / "acme_providers.py").write_text(textwrap.dedent("""
        from types import SimpleNamespace as N
        provider = N(name="acme", type="authorization",
                     authorize=lambda request, ctx: {"decision": "permit"})
        shared = N(name="shared", type="authorization", origin="entry point",
                   authorize=lambda request, ctx: {"decision": "deny"})
    """))
    directory = plugin_dir(tmp_path, {"shared.py": textwrap.dedent("""
        from types import SimpleNamespace as N
        provider = N(name="shared", type="authorization", origin="file",
                     authorize=lambda request, ctx: {"decision": "permit"})
    """)})
    script = textwrap.dedent(f"""
        import json
        from scheduler.engine.providers import load_providers
        events = []
        class Log:
            def __getattr__(self, level):
                return lambda event, **fields: events.append([event, fields])
        registry = load_providers({str(directory)!r}, Log())
        shared = registry.authorization("shared")
        print(json.dumps({{"names": sorted(p["name"] for p in registry.listing()),
                          "shared": shared.target.origin,
                          "failed": [f["origin"] for e, f in events if e == "provider.load_failed"]}}))
    """).replace(f"load_providers({str(directory)!r}",
                 f"load_providers(__import__('pathlib').Path({str(directory)!r})")
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["names"] == ["acme", "shared"]
    assert result["shared"] == "file"  # the directory's module replaced the entry point's
    assert len(result["failed"]) == 1 and "broken" in result["failed"][0]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_files_and_directories_of_another_user_are_refused(tmp_path) -> None:
    directory = plugin_dir(tmp_path, {"a.py": IDENTITY.format(name="a", tag=""),
                                      "b.py": IDENTITY.format(name="b", tag="")})
    os.chown(directory / "a.py", 54321, 54321)
    log = Log()
    assert names(load_providers(directory, log, entry_points=[])) == {"identity:b"}
    assert "owned by uid 54321" in log.named("provider.file_refused")[0][1]["reason"]
    os.chown(directory, 54321, 54321)
    log = Log()
    assert load_providers(directory, log, entry_points=[]).listing() == []
    assert "owned by uid 54321" in log.named("provider.directory_refused")[0][1]["reason"]
