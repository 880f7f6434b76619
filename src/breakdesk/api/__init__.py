"""The HTTP API (`breakdesk serve`): FastAPI app, authentication, RBAC, tenant isolation, limits, worker."""

from breakdesk.api.app import create_app
from breakdesk.api.settings import ApiSettings, ConfigError

__all__ = ["ApiSettings", "ConfigError", "create_app"]
