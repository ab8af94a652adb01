from tests.conftest_podman import *  # noqa: F401,F403
