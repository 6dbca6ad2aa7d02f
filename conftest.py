"""Loaded by pytest before any test path (it sits at the root): the options every run must
understand. `--hazard-log` (tests/safety/plugin.py) is registered here rather than in
tests/conftest.py because pytest reads an unknown option's value as a test path until the plugin
that defines it is loaded, and would then never find tests/conftest.py."""

pytest_plugins = ("tests.safety.plugin",)
