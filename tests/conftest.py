from tests.conftest_podman import *  # noqa: F401,F403
from tests.cluster import cluster  # noqa: F401
