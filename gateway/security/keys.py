"""API keys from GATEWAY_API_KEYS and a mounted file; compared in constant time, identified by fingerprint."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_SPLIT = re.compile(r"[,\s]+")


def fingerprint(key: str) -> str:
    """A short, stable, non-reversible id for a key: safe for logs, metrics and limits."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:10]


def parse_keys(text: str) -> set[str]:
    # Comments let operators annotate a mounted file ("# mobile app, rotated 2026-05").
    lines = (line.split("#", 1)[0] for line in text.splitlines())
    return {k for line in lines for k in _SPLIT.split(line) if k}


@dataclass
class KeyStore:
    """The accepted keys. The file is re-read when it changes, so a rotated Kubernetes Secret applies
    without a restart (the kubelet swaps the mounted file atomically)."""

    env_keys: frozenset[str] = frozenset()
    path: str | None = None
    _file_keys: frozenset[str] = frozenset()
    _stamp: tuple[int, int] | None = None
    _digests: dict[bytes, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rebuild()
        if self.path:
            self._reload(force=True)

    @classmethod
    def from_settings(cls, env_value: str | None, path: str | None) -> KeyStore:
        return cls(env_keys=frozenset(parse_keys(env_value or "")), path=path or None)

    @property
    def enabled(self) -> bool:
        """Auth is on when any key source is configured, even if the file is momentarily empty:
        an empty Secret must lock the gateway, not open it."""
        return bool(self.env_keys) or self.path is not None

    def _rebuild(self) -> None:
        # Compare digests, not keys: equal-length inputs make compare_digest's timing independent of the key.
        self._digests = {
            hashlib.sha256(k.encode()).digest(): fingerprint(k) for k in self.env_keys | self._file_keys
        }

    def _reload(self, force: bool = False) -> None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if force or self._file_keys:
                log.error("api key file unreadable; keys from it are refused", extra={"error": str(exc)})
            self._file_keys, self._stamp = frozenset(), None
            self._rebuild()
            return
        stamp = (st.st_mtime_ns, st.st_ino)
        if not force and stamp == self._stamp:
            return
        try:
            with open(self.path, encoding="utf-8") as fh:
                keys = frozenset(parse_keys(fh.read()))
        except (OSError, UnicodeDecodeError) as exc:
            log.error("api key file unreadable; keys from it are refused", extra={"error": str(exc)})
            keys = frozenset()
        self._file_keys, self._stamp = keys, stamp
        self._rebuild()
        log.info("api keys loaded", extra={"keys": len(self._digests)})

    def check(self, candidate: str | None) -> str | None:
        """The fingerprint of `candidate` when it is an accepted key, else None."""
        if not candidate:
            return None
        if self.path:
            self._reload()
        digest = hashlib.sha256(candidate.encode()).digest()
        found = None
        for known, fp in self._digests.items():
            if hmac.compare_digest(known, digest):
                found = fp
        return found
