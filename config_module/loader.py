"""Load arkq's configuration: defaults, then a YAML file, then `ARK_*` environment variables.

`ARK_CONFIG` names the YAML file; without it the project's top-level `config.yaml` is read when it is
there. Environment variables use the prefix `ARK_` and `__` between levels (`ARK_LLM__BASE_URL`).
Secrets (`llm.api_key`, `redis.password`) are meant to come from the environment.

`from config_module.loader import config` gives the process's configuration, loaded on first use.
Anything wrong (an unknown key, a wrong type, a missing file) raises `ConfigError` at start with the
key's name, because a worker that silently ignores `ARK_WORKER__MAX_JOBZ` is worse than one that stops.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from arkq.errors import ConfigError
from config_module.settings import ArkConfig

__all__ = [
    "ConfigError",
    "config_path",
    "foreign_env_hints",
    "load_config",
    "redacted",
    "setting_env_names",
    "unknown_env_keys",
]

ENV_PREFIX = "ARK_"
ENV_NESTED_DELIMITER = "__"
CONFIG_PATH_ENV = "ARK_CONFIG"
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config.yaml"


def config_path(environ: Mapping[str, str]) -> Path | None:
    named = environ.get(CONFIG_PATH_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_PATH_ENV}={named!r}: no such file")
        return path
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def unknown_env_keys(environ: Mapping[str, str]) -> list[str]:
    """`ARK_*` variables that name no setting: pydantic-settings would ignore them without a word."""
    known = {name.upper() for name in setting_env_names()}
    return sorted(
        name
        for name in environ
        if name.startswith(ENV_PREFIX) and name != CONFIG_PATH_ENV and name not in known
    )


def setting_env_names(model: type[BaseModel] = ArkConfig, prefix: str = ENV_PREFIX) -> list[str]:
    """Every setting's environment variable (`ARK_REDIS__URL`, ...)."""
    names = []
    for field_name, field in model.model_fields.items():
        annotation = field.annotation
        name = prefix + field_name.upper()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += setting_env_names(annotation, name + ENV_NESTED_DELIMITER)
        else:
            names.append(name)
    return names


def _unknown_env_message(unknown: list[str]) -> str:
    """Each unknown name, with the setting it most likely meant (`ARK_REDIS_URL`: `ARK_REDIS__URL`)."""
    candidates = setting_env_names()
    named = []
    for name in unknown:
        close = difflib.get_close_matches(name.upper(), candidates, n=1, cutoff=0.75)
        named.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return (
        f"unknown setting(s) in the environment: {', '.join(named)}. Settings are ARK_<SECTION>__<NAME>, "
        "two underscores between section and name (config.yaml lists them)"
    )


#: Variables other software reads that a newcomer sets for arkq: what arkq reads instead.
FOREIGN_NAMES = {
    "REDIS_URL": "ARK_REDIS__URL",
    "OPENAI_BASE_URL": "ARK_LLM__BASE_URL",
    "OPENAI_API_KEY": "ARK_LLM__API_KEY",
}


def foreign_env_hints(environ: Mapping[str, str]) -> list[str]:
    """A line for each variable set for some other tool (`REDIS_URL`) whose arkq name is not set: arkq
    does not read it, and a person who set it for arkq should hear so."""
    return [
        f"{name} is set, but arkq does not read it: set {ours} for arkq"
        for name, ours in FOREIGN_NAMES.items()
        if environ.get(name) and ours not in environ
    ]


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping instead of `os.environ`."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._environ.items()}


def _settings_class(environ: Mapping[str, str], yaml_path: Path | None) -> type[BaseSettings]:
    class ArkSettings(BaseSettings, ArkConfig):
        model_config = SettingsConfigDict(
            env_prefix=ENV_PREFIX,
            env_nested_delimiter=ENV_NESTED_DELIMITER,
            case_sensitive=False,
            extra="forbid",
        )

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            env = _MappingEnvSource(settings_cls, environ)
            sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env)
            if yaml_path is not None:
                sources += (YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path),)
            return sources

    return ArkSettings


def _describe(error: ValidationError, environ: Mapping[str, str], yaml_path: Path | None) -> str:
    """One line per bad value: its setting, what is wrong, and where it came from (the environment
    variable, or the YAML file), which is where it must be fixed."""
    in_environment = {name.upper() for name in environ}
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        key = ".".join(loc) or "(top level)"
        variable = ENV_PREFIX + ENV_NESTED_DELIMITER.join(loc).upper()
        if variable in in_environment:
            source = f"from the environment: {variable}"
        else:
            source = f"from {yaml_path}" if yaml_path is not None else "a default"
        lines.append(f"  {key}: {item['msg']} (got {_shown(item.get('input'))!r}, {source})")
    return "\n".join(lines)


def redacted(url: str) -> str:
    """`url` with its password, if any, replaced by ***: fit for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _shown(value: Any) -> Any:
    """A value as an error message may quote it: a URL's password hidden."""
    return redacted(value) if isinstance(value, str) and "://" in value else value


def load_config(environ: Mapping[str, str] | None = None, **overrides: Any) -> ArkConfig:
    """Build the configuration from `environ` (default: the process environment) and the YAML file."""
    environ = os.environ if environ is None else environ
    unknown = unknown_env_keys(environ)
    if unknown:
        raise ConfigError(_unknown_env_message(unknown))
    path = config_path(environ)
    settings_cls = _settings_class(environ, path)
    try:
        loaded = settings_cls(**overrides)
    except ValidationError as error:
        raise ConfigError(f"invalid configuration:\n{_describe(error, environ, path)}") from None
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(f"cannot read configuration {path}: {error}") from None
    return ArkConfig.model_validate(loaded.model_dump())


_loaded: ArkConfig | None = None

if TYPE_CHECKING:
    config: ArkConfig  # loaded on first use, by `__getattr__` below


def __getattr__(name: str) -> Any:
    """`config` is loaded on first use, so that importing this module (for `ConfigError`, say) never
    fails; the first use raises ConfigError if the configuration is wrong."""
    global _loaded
    if name == "config":
        if _loaded is None:
            _loaded = load_config()
        return _loaded
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
