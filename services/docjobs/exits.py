"""Exit statuses that mean something to the supervisor of the local stack (`docjobs up`).

`docjobs up` restarts a service that exits on its own, whatever its status, except this one: a service
exits with EXIT_DO_NOT_RESTART when it has found that starting it again cannot help (the host or the
configuration cannot give it what it needs; a renderer whose sandbox cannot start, for one), after
logging one line saying why. The supervisor then stops the whole stack at once, with that reason, instead
of restarting it into a crash loop. The value is sysexits.h's EX_CONFIG, which systemd and others also
read as "configuration error".
"""

from __future__ import annotations

EXIT_DO_NOT_RESTART = 78
