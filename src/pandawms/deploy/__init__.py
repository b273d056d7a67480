"""Deployment files (systemd units, env file, logrotate, balancer and cache examples), rendered by the CLI."""
