"""Ed25519 signed tree heads: a log's size and root, signed so they cannot be rewritten.

A head is the analogue of RFC 9162's signed tree head. The signed message is the fixed
prefix ``shieldwall-audit-tree-head-v1\\n`` followed by the canonical JSON of
``{"key_id", "log_id", "root" (hex), "timestamp_ms", "tree_size"}``. ``key_id`` is the
hex SHA-256 of the raw 32-byte public key, so a verifier holding several keys knows which
one to use, and a head signed by any other key is refused.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .canonical import canonical_json

HEAD_DOMAIN = b"shieldwall-audit-tree-head-v1\n"


def key_id_of(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True, slots=True)
class TreeHead:
    log_id: str
    tree_size: int
    root: bytes
    timestamp_ms: int
    key_id: str
    signature: bytes

    def signed_message(self) -> bytes:
        return head_message(self.log_id, self.tree_size, self.root, self.timestamp_ms, self.key_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "log_id": self.log_id,
            "tree_size": self.tree_size,
            "root": self.root.hex(),
            "timestamp_ms": self.timestamp_ms,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TreeHead:
        try:
            return cls(
                log_id=str(d["log_id"]),
                tree_size=int(d["tree_size"]),
                root=bytes.fromhex(str(d["root"])),
                timestamp_ms=int(d["timestamp_ms"]),
                key_id=str(d["key_id"]),
                signature=base64.b64decode(str(d["signature"]), validate=True),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"not a tree head: {exc}") from exc


def head_message(log_id: str, tree_size: int, root: bytes, timestamp_ms: int, key_id: str) -> bytes:
    body = {
        "key_id": key_id,
        "log_id": log_id,
        "root": root.hex(),
        "timestamp_ms": timestamp_ms,
        "tree_size": tree_size,
    }
    return HEAD_DOMAIN + canonical_json(body)


def head_problem(head: TreeHead, public_keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    """Why ``head`` is not a valid signature by one of ``public_keys``; None if it is."""
    key = public_keys.get(head.key_id)
    if key is None:
        return f"signed by unknown key {head.key_id[:16]}"
    try:
        key.verify(head.signature, head.signed_message())
    except InvalidSignature:
        return "signature does not verify"
    return None


class HeadSigner:
    """Signs tree heads with one Ed25519 key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id_of(self.public_key)

    def sign(self, log_id: str, tree_size: int, root: bytes, timestamp_ms: int) -> TreeHead:
        msg = head_message(log_id, tree_size, root, timestamp_ms, self.key_id)
        return TreeHead(log_id, tree_size, root, timestamp_ms, self.key_id, self._key.sign(msg))

    def public_pem(self) -> bytes:
        return public_key_pem(self.public_key)

    @classmethod
    def generate(cls) -> HeadSigner:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> HeadSigner:
        """Load the key at ``path``; create it (mode 0600) if absent.

        Creation is atomic and race-free: the key is written to a temporary file and
        hard-linked into place, so concurrent first users agree on one key.
        """
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".audit-key-")
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, pem)
                os.fsync(fd)
                os.close(fd)
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    pass
            finally:
                os.unlink(tmp)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(key)


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def keyring(*keys: Ed25519PublicKey) -> dict[str, Ed25519PublicKey]:
    return {key_id_of(k): k for k in keys}
