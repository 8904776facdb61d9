"""The ASGI connections GracefulASGI serves: the protocol words, an interruptible
``receive``, a ``send`` that tracks the response, websocket sessions, Django's handler."""
