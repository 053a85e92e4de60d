"""Where the studio runs: Hugging Face Spaces and ZeroGPU detection, writable caches there, and the
network guard (``--host`` needs ``--auth`` or ``--no-auth``; ``--mcp`` and ``--auth`` do not mix).

Standard library only: the page and its helpers ask ``on_space()`` without loading any model code.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def network_access(host: str, auth: str | None, no_auth: bool) -> tuple[str, str] | None:
    """The login to require, or None; refuses to open the studio to a network by accident."""
    credentials = None
    if auth is not None:
        user, sep, password = auth.partition(":")
        if not sep or not user or not password:
            raise ValueError("--auth: give it as USER:PASSWORD, both non-empty")
        credentials = (user, password)
    if host not in LOCAL_HOSTS and credentials is None and not no_auth and not on_space():
        raise ValueError(
            f"--host {host} lets every device on the network use this studio and its GPU; "
            "add --auth USER:PASSWORD, or --no-auth to accept that"
        )
    return credentials


def check_mcp(mcp: bool, auth: str | None) -> None:
    """Refuse ``--mcp`` where its server would be unusable or open: Gradio 6.31's MCP routes
    list the tools without asking for the login, and its tool calls go through an internal
    client that has no login, so every call fails for everyone."""
    if not mcp:
        return
    if auth is not None:
        raise ValueError(
            "--mcp cannot be combined with --auth yet: Gradio's MCP server lists the tools to anyone "
            "without the login and cannot call them with it; start without --mcp, or serve MCP from "
            "a studio on 127.0.0.1 without --auth"
        )
    if importlib.util.find_spec("mcp") is None:
        raise ValueError("--mcp needs Gradio's MCP extra: pip install 'gradio[mcp]'")


def lan_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses, for the phone-on-the-Wi-Fi URL."""
    try:
        names = socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        return []
    return sorted({name for name in names if not name.startswith("127.")})


def on_space() -> bool:
    """Running on Hugging Face Spaces (which sets ``SPACE_ID``): the Space's own settings guard access."""
    return bool(os.environ.get("SPACE_ID"))


def on_zerogpu() -> bool:
    return on_space() and os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


def prepare_environment() -> None:
    """Before any model import: writable caches on a Space (its home cache is read-only at run time)."""
    if on_space():
        writable = Path(os.environ.get("TMPDIR", "/tmp")) / "ace-music-studio"
        os.environ.setdefault("HF_MODULES_CACHE", str(writable / "hf_modules"))
        os.environ.setdefault("ACE_STUDIO_CACHE", str(writable / "cache"))
