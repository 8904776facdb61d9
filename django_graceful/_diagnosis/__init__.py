"""What is stuck, and where: worker snapshots and their stores, and what reads them from
another process (``checkshutdown``: the report, ``--drill``, ``--static``)."""
