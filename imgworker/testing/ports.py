"""Loopback ports for servers that tests, benchmarks and the demo start (gearmand, HTTP receivers, metrics).

``bind(0)`` then ``close()`` hands a port back to the kernel, which may give it to anyone (an outgoing
connection's ephemeral port, another test) before the server binds it. ``reserve_port`` keeps it instead: a
connection to it is made and closed from the server side, which leaves the port in TIME_WAIT for about 60 s.
The kernel gives a TIME_WAIT port to no one as an ephemeral port, while a server that binds with SO_REUSEADDR
(gearmand, Python's http.server and prometheus_client, PHP's and Node's servers all do) takes it at once.
"""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def reserve_port(host: str = HOST, port: int = 0) -> int:
    """A free port of ``host`` (or ``port`` again, once its server has exited, to keep it for a restart), held
    in TIME_WAIT until a SO_REUSEADDR server binds it (~60 s). OSError if ``port`` is taken."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(1)
        port = int(listener.getsockname()[1])
        with socket.create_connection((host, port)) as client:
            accepted, _ = listener.accept()
            accepted.close()  # the server side closes first: it is the side left in TIME_WAIT
            client.recv(1)  # the FIN arrived: the TIME_WAIT is on the server side
    return port
