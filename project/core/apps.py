"""The toolkit's app config: start-up checks that need logging configured."""

from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Runs the late-patching check once Django's logging is set up."""

    name = "project.core"
    label = "project_core"

    def ready(self) -> None:
        """Warn when gevent patching came too late to take effect."""
        from project import green

        green.warn_if_patched_late()
