"""Exit statuses of every command (DESIGN.md: 0 nothing would be denied, 1 something would, 2 errors)."""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    OK = 0
    DENIED = 1  # check and audit: at least one object would be denied
    ERROR = 2  # usage, unreadable input, unusable configuration, cluster unreachable
    INTERRUPTED = 130
