"""Shared fixtures of the training tests."""

import pytest

from arvis.tokenizers.base import TOKENIZERS
from arvis.train import loop


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    """A saved vq-tiny tokenizer (random weights) for generator-training tests."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer"
    TOKENIZERS.build("vq-tiny").eval().save_pretrained(path)
    return path


@pytest.fixture
def kill_at_step(monkeypatch):
    """``kill_at_step(n)`` makes the next run raise KeyboardInterrupt when it logs step ``n`` (a killed run);
    ``kill_at_step(None)`` lets runs finish again."""
    original_update = loop.ProgressLog.update

    def arm(step):
        if step is None:
            monkeypatch.setattr(loop.ProgressLog, "update", original_update)
            return

        def crash(self, logged_step, values):
            if logged_step == step:
                raise KeyboardInterrupt("killed")
            original_update(self, logged_step, values)

        monkeypatch.setattr(loop.ProgressLog, "update", crash)

    return arm
