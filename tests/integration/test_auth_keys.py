"""The token signing key on the embedded default: generated once into the data folder, private
to its owner, and the same key after a restart (tokens survive it)."""
from __future__ import annotations

import json
import stat

from hub.auth.keys import GENERATED_NAME, load_signing_keys


def test_generated_key_is_0600_and_reused(tmp_path):
    first = load_signing_keys(None, tmp_path)
    path = tmp_path / "auth" / GENERATED_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = load_signing_keys(None, tmp_path)
    assert again.signing.kid == first.signing.kid
    assert again.jwks() == first.jwks()
    assert list(path.parent.iterdir()) == [path]  # no staging file left behind


def test_configured_key_file_wins(tmp_path, signing_key_file):
    keys = load_signing_keys(signing_key_file, tmp_path)
    assert keys.signing.kid == json.loads(signing_key_file.read_text())["keys"][0]["kid"]
    assert not (tmp_path / "auth").exists()
