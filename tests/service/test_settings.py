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
    assert settings.database_url == f"sqlite:///{tmp_path / 'paretoml.db'}"  # made absolute at start
    assert settings.host == "127.0.0.1" and settings.token is None and settings.study_concurrency == 1
    assert settings.ray_temp_dir is None and settings.ray_retry_base_s == 1.0 and settings.ray_retry_max_s == 60.0


def test_paths_are_resolved_at_start_so_the_working_directory_is_not_needed_later(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PARETOML_DATABASE_URL", "sqlite+pysqlite:///../data/studies.db?timeout=5")
    monkeypatch.setenv("PARETOML_RAY_TEMP_DIR", "ray")
    settings = Settings()
    assert settings.database_url == f"sqlite+pysqlite:///{tmp_path.parent / 'data' / 'studies.db'}?timeout=5"
    assert settings.ray_temp_dir == str(tmp_path / "ray")
    for url in ("sqlite:////srv/a.db", "sqlite://", "sqlite:///:memory:", "postgresql+psycopg://u:pw@db/paretoml"):
        assert Settings(database_url=url).database_url == url  # absolute, in memory, or not a file: as given


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
