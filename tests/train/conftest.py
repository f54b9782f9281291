"""Shared fixtures of the training tests."""

import pytest

from arvis.train import loop


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
