"""The bench project served through django_graceful (the one-line swap a user makes)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.project.settings")

from django_graceful.asgi import get_asgi_application

application = get_asgi_application()

if os.environ.get("BENCH_PROBE_INTERVAL"):
    # request_cost.py --instructions: the heartbeat thread's probe of the event loop (four
    # times a second) costs per second, not per request, as the snapshots do (left out
    # by BENCH_HEARTBEAT). Under valgrind, which slows the server down some fifty times
    # (and more while the machine is busy), a count would charge each request with that
    # many times its share: here it is left out too.
    from django_graceful._diagnosis import publisher

    publisher.PROBE_INTERVAL = float(os.environ["BENCH_PROBE_INTERVAL"])
