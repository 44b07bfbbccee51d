from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents"

    def ready(self):
        from . import live
        from .pricing import overrides

        overrides.connect_signals()
        live.connect_signals()
