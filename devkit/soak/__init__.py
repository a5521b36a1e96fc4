"""``python -m devkit.soak``: the whole pipeline under steady load and random faults, then the verdict.

It starts, on 127.0.0.1 and under a fresh temp dir: a private redis-server (AOF ``everysec``,
``noeviction``), the AEP sandbox (in this process, bodies not stored), the receiver under gunicorn
(2 workers) and ``--workers`` Celery workers (2 pool processes each). It posts pushes
at ``--rate`` per second for ``--minutes`` (single pushes and arrays; about 1% invalid, 1% repeats of
a recent ``transmissionId`` under another ``eventType``) and, at random seeded intervals, injects a
fault:

* ``worker_kill``: SIGKILL of a worker's whole process group, then a restart (``w1`` is spared when
  there are two workers or more, so its memory over the run shows a leak);
* ``redis_restart``: ``SHUTDOWN`` (the AOF is flushed) and a restart a few seconds later;
* ``redis_kill``: SIGKILL and a restart; under ``appendfsync everysec`` Redis may lose up to about a
  second of writes by design, so missing pushes acknowledged shortly before it are counted apart;
* ``aep_throttle`` (429/503 with Retry-After), ``aep_500`` (a burst of 5xx), ``aep_reject``
  (``transmissionId``s refused by AEP: they must end as ``aep_rejected`` dead letters),
  ``token_expiry``, ``aep_outage`` (503s, or connection refused) and ``aep_slow`` (answers slower
  than the worker's timeout, so AEP may get a batch twice, under the same ``_id``s).

Each kind is injected once (in a seeded order) before kinds are drawn at random by weight.

Settings differ from the production defaults only where a soak needs quick recovery:
``PENDING_CLAIM_SECONDS=5`` (work a killed worker held is taken over after 5 s, not 30),
``DELIVERY_BACKOFF_CAP_SECONDS=10`` (not 120), ``AEP_TIMEOUT_SECONDS=5``; the sandbox's tokens live
300 s so renewals happen during the run.

A process that exits by itself (one not being killed by a fault) is restarted, as the restart policy
in docker-compose.yml would, and listed in the verdict with the last error in its log.

Then it stops posting, lifts the AEP faults (rejects stay), waits (bounded) for both streams to be
empty with nothing pending, and prints the ledger verdict. The exit status is 1 when a push is
missing (beyond what a Redis SIGKILL may lose), any ``transmissionId`` reached AEP under two ``_id``s
or as two versions, a push was dead-lettered for no expected reason, the pipeline did not drain or a
fault could not be injected; 130 on Ctrl-C (or SIGTERM); 2 when the stack could not start. The temp
dir (logs, AOF) is kept when the run failed or a process exited by itself, or with ``--keep``.
"""
