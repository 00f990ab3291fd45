"""Settings come from PARETOML_* variables or a .env file; bad values are named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from paretoml.service.settings import Settings


def test_defaults_are_a_local_sqlite_file_on_loopback_without_a_token(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "API_TOKEN", "HOST", "PORT"):
        monkeypatch.delenv(f"PARETOML_{name}", raising=False)
    settings = Settings()
    assert settings.database_url == "sqlite:///paretoml.db"
    assert settings.host == "127.0.0.1" and settings.token is None and settings.study_concurrency == 1


def test_environment_and_dotenv(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("PARETOML_API_TOKEN=from-file\nPARETOML_PORT=9001\n")
    monkeypatch.setenv("PARETOML_PORT", "9100")  # the environment wins over the file
    monkeypatch.setenv("PARETOML_STUDY_CONCURRENCY", "3")
    settings = Settings()
    assert settings.token == "from-file" and settings.port == 9100 and settings.study_concurrency == 3
    assert "from-file" not in repr(settings)  # the token is a secret


def test_a_bad_value_names_the_setting(monkeypatch):
    monkeypatch.setenv("PARETOML_PORT", "http")
    with pytest.raises(ValidationError, match="port"):
        Settings()
