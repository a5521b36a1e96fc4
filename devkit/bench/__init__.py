"""The benchmark: ``python -m devkit.bench [--quick] [--only SECTIONS] [--out DIR] [--profile]``.

Everything runs on this machine, on loopback, against a private redis-server and the AEP sandbox
(in its own process, bodies not stored). Speed is reported as ratios measured in the same run,
because the machine is shared: the load average at the start of each section is recorded so a
noisy run shows. Sections:

1. ``receiver``: the receiver under gunicorn (2 sync workers) against a baseline Flask endpoint
   that only parses JSON, and the same endpoint plus one XADD (:mod:`devkit.bench_baseline`),
   same config, interleaved rounds, load from wrk (or a Python load generator); no workers run,
   Redis is flushed between rounds.
2. ``drain``: N pushes already in the inbox, drained by one Celery worker (2 processes)
   until the sandbox accepted them all; then the same N as one Celery task per push
   (:mod:`devkit.bench_naive`).
3. ``sustained``: a fixed offered rate through the receiver with everything running; delivered
   rate, backlog, and delivery latency (202 received → accepted by the sandbox).
4. ``batching``: AEP requests per 1,000 events under that load, and latency at a trickle.
5. ``memory``: Redis bytes per queued push; worker RSS over a long drain.

It prints one table and writes ``results.json`` and ``results.png`` to ``--out`` (and, with
``--profile``, py-spy's collapsed stacks as ``profile-<section>-<process>.txt``). Process logs go
to ``var/bench/``. Every process it starts is stopped at the end, on error and on Ctrl-C.
"""
