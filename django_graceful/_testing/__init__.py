"""What ``django_graceful.testing``'s fixtures do, imported only when a test uses one: the
app in-process (``inprocess``), a shutdown drill (``drill``), a live server (``live_server``)."""
