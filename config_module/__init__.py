"""arkq's configuration: `from config_module.loader import config; config.get("llm.base_url")`."""

from config_module.loader import ConfigError, load_config
from config_module.settings import ArkConfig

__all__ = ["ArkConfig", "ConfigError", "load_config"]
