"""The embedded stack: a private redis-server per data dir."""

from __future__ import annotations

from dataclasses import replace

import pytest

from common.config.settings import Settings
from producer.local import LocalStack

pytestmark = pytest.mark.integration


def test_one_embedded_stack_per_data_dir(tmp_path):
    # Given an embedded stack (Redis only) running on a data dir
    settings = replace(Settings.from_env({}), data_dir=tmp_path)
    # When a second command starts on the same data dir, Then it is refused clearly
    refused = pytest.raises(RuntimeError, match="another neardup command is running")
    with LocalStack(settings, workers=0), refused:
        LocalStack(settings, workers=0).__enter__()
    # and once the first has stopped, the next one starts
    with LocalStack(settings, workers=0) as again:
        assert again.redis.proc.poll() is None
