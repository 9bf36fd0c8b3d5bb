"""C2MS: dynamic server groups, group metrics and group actions on top of a real Ganglia (docs/monitor.md)."""
