"""The monitor server's routes, one router per area (groups, hosts, actions and the audit log, metrics and
status, dashboard pages), over the state in :mod:`strato.monitor.routes.context`; assembled by
:func:`strato.monitor.server.create_app`."""
