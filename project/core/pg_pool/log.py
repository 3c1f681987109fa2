"""The logger of the pool's machinery.

One name for every module of the pool, the name it had as a single module, so
log configurations and searches written for it keep working.
"""

import logging

logger = logging.getLogger("project.core.pg_pool.pool")
