"""The production HTTP service: a master process, N worker processes, HTTP and HTTPS.

The master binds the sockets, forks the workers, restarts any that die, forwards SIGHUP (log
reopening) and SIGTERM (graceful stop), and tells systemd how the service is doing.
"""
