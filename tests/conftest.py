from tests.conftest_podman import *  # noqa: F401,F403
from tests.conftest_registry import registry  # noqa: F401
from tests.cluster import cluster  # noqa: F401
from tests.service_fixtures import http, subscribe  # noqa: F401
