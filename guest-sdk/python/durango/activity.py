"""What an activity knows about the call it serves, and the app's settings."""

from datetime import datetime
from typing import Optional

from componentize_py_types import Err
from wit_world.imports import links, settings


class SettingMissingError(Exception):
    pass


def setting(name: str) -> Optional[str]:
    """An app setting (secrets included); None when unset. Activities only:
    an orchestrator reads non-secret ones with `context.get_setting`."""
    return settings.get(name)


def required_setting(name: str) -> str:
    """An app setting that must be set."""
    value = settings.get(name)
    if value is None:
        raise SettingMissingError(f"the setting {name} is not set")
    return value


def _expiry(expires_at: Optional[datetime]) -> Optional[int]:
    return None if expires_at is None else round(expires_at.timestamp() * 1000)


class ActivityContext:
    """Given to an activity that has a parameter named `context`."""

    def __init__(self, call):
        self.instance_id: str = call.instance_id
        # Stable across retries and re-runs of this call, unique to it for
        # ever: what an outside service can deduplicate on.
        self.idempotency_key: str = call.idempotency_key
        self.attempt: int = call.attempt
        self.send_event_url: str = call.send_event_url
        self.status_url: str = call.status_url

    setting = staticmethod(setting)
    required_setting = staticmethod(required_setting)

    def event_link(self, event: str, holder: str, expires_at: Optional[datetime] = None) -> str:
        """A URL `holder` can POST `event`'s data to."""
        try:
            return links.event_link(event, holder, _expiry(expires_at))
        except Err as error:
            raise ValueError(error.value) from None

    def status_link(self, holder: str, expires_at: Optional[datetime] = None) -> str:
        """A URL `holder` can read the instance's status at."""
        try:
            return links.status_link(holder, _expiry(expires_at))
        except Err as error:
            raise ValueError(error.value) from None
