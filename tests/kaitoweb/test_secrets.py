from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from kaitoweb.secrets import SecretBox, SecretUnreadable


def test_a_sealed_secret_does_not_contain_the_plaintext_and_opens_again() -> None:
    box = SecretBox([Fernet.generate_key()])
    sealed = box.seal("hf_abcdef123456")
    assert "hf_abcdef" not in sealed
    assert box.open(sealed) == "hf_abcdef123456"


def test_keys_rotate_new_first_old_still_opens() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    sealed_with_old = SecretBox([old]).seal("kubeconfig")
    both = SecretBox([new, old])
    assert both.open(sealed_with_old) == "kubeconfig"
    rotated = both.rotate(sealed_with_old)
    assert SecretBox([new]).open(rotated) == "kubeconfig"


def test_a_secret_no_key_opens_is_an_error_not_garbage() -> None:
    sealed = SecretBox([Fernet.generate_key()]).seal("api-key")
    with pytest.raises(SecretUnreadable, match="no key in ENCRYPTION_KEYS"):
        SecretBox([Fernet.generate_key()]).open(sealed)
