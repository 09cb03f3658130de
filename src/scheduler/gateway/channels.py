"""What the gateway's channels accept: per-channel size limits, and text split to fit them.

Port of the reference's ``gateway.js`` message chunking (features §8.5). The gateway's
``message`` tool sends one part per call; the outbound sender (``engine/delivery.py``) calls it
once per part returned here.

Differences from the reference, all deliberate: chunking never splits a character (the
reference can split a surrogate pair), never emits an empty part, and always keeps
``prefix + part`` within the limit (the reference's 256-byte floor can exceed small limits).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from scheduler.jstext import JS_WHITESPACE, utf8_len

TELEGRAM_MAX_MESSAGE_LENGTH: Final = 4096
# Per-channel limits in UTF-8 bytes; channels not listed are sent as one part.
CHANNEL_LIMITS: Final[Mapping[str, int]] = MappingProxyType({"telegram": TELEGRAM_MAX_MESSAGE_LENGTH})
DEFAULT_CHANNEL_LIMIT: Final[int | None] = None
# Channels whose gateway plugin sends an uploaded file (the ``message`` tool's ``buffer``) as a
# photo or document (openclaw 2026.9.6 docs; Telegram checked end to end). Others get the text
# only, with a note: some have no uploads at all (nostr, irc) or turn them into a link line.
MEDIA_CHANNELS: Final = frozenset({
    "telegram", "discord", "slack", "whatsapp", "signal", "imessage", "msteams", "matrix",
    "mattermost", "googlechat",
})
# Bytes the reference reserves for the "[i/N] " prefix (enough up to N = 9999).
_PREFIX_RESERVE: Final = 12
_MAX_CHAR_BYTES: Final = 4


def _char_bytes(char: str) -> int:
    code = ord(char)
    if code > 0xFFFF:
        return 4
    if code > 0x7FF:
        return 3
    if code > 0x7F:
        return 2
    return 1


def _prefix(index: int, total: int) -> str:
    return f"[{index}/{total}] "


def _split(text: str, budget: int) -> list[str]:
    """Parts of at most ``budget`` UTF-8 bytes, cut at a newline or space in the window's second half."""
    parts: list[str] = []
    length = len(text)
    pos = 0
    while pos < length:
        used = 0
        end = pos
        while end < length:
            size = _char_bytes(text[end])
            if used + size > budget:
                break
            used += size
            end += 1
        if end == length:
            parts.append(text[pos:])
            break
        half = (end - pos) * 0.5
        split_at = text.rfind("\n", pos, end + 1)
        if split_at - pos < half:
            split_at = text.rfind(" ", pos, end + 1)
        if split_at - pos < half:
            split_at = end
        part = text[pos:split_at].rstrip(JS_WHITESPACE)
        if part:
            parts.append(part)
        pos = split_at
        while pos < length and text[pos] in JS_WHITESPACE:
            pos += 1
    return parts


def chunk_message(text: str, limit: int | None) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` UTF-8 bytes each, prefix included.

    A text within the limit (or any text when ``limit`` is None) is one part without prefix.
    Otherwise the parts are cut at the last newline (else space) in the second half of each
    window, else hard at the limit, with surrounding whitespace trimmed, and each is prefixed
    ``[i/N] ``. As in the reference, 12 bytes
    are reserved for the prefix (more when N needs it), so Telegram parts match the reference's.
    Raises ValueError when ``limit`` leaves no room for a character after the prefix.
    """
    if limit is None or utf8_len(text) <= limit:
        return [text]
    reserve = _PREFIX_RESERVE
    while True:
        budget = limit - reserve
        if budget < _MAX_CHAR_BYTES:
            raise ValueError(f"chunk limit {limit} is too small for prefixed parts")
        parts = _split(text, budget)
        needed = len(_prefix(len(parts), len(parts)))
        if needed <= reserve:
            return [_prefix(index, len(parts)) + part for index, part in enumerate(parts, start=1)]
        reserve = needed


def channel_limit(channel: str | None) -> int | None:
    """The size limit (UTF-8 bytes) of ``channel``, or None when it takes any length."""
    return CHANNEL_LIMITS.get(channel or "", DEFAULT_CHANNEL_LIMIT)


def channel_takes_media(channel: str | None) -> bool:
    """Whether attachments are sent to ``channel`` (no channel: the gateway's default, unknown)."""
    return (channel or "").lower() in MEDIA_CHANNELS


def split_message_for_channel(channel: str | None, text: str) -> list[str]:
    """The parts sent to ``channel``: chunked to its limit, or the whole text when it has none."""
    return chunk_message(text, channel_limit(channel))
