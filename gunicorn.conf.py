"""gunicorn's settings for the receiver, read by a plain `gunicorn "receiver.app:create_app()"`.

gunicorn loads ./gunicorn.conf.py by default, so starting the receiver from the project
directory (or in the image, where this file sits in the working directory) picks them up;
flags on the command line still win.
"""

# Each connection a greenlet with header and body deadlines: slow or idle clients cannot hold a
# process (receiver/server.py says why and how).
worker_class = "receiver.server.Worker"
# Greenlets per worker process: connections one process holds at once, hostile ones included.
worker_connections = 1000
# Non-zero, so requests on a connection are read under the header deadline
# (RECEIVER_HEADER_TIMEOUT_SECONDS, which also bounds how long an idle connection stays open).
keepalive = 5
