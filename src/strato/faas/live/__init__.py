"""The live FaaS platform: a local gateway, real function instances and live keep-alive."""
