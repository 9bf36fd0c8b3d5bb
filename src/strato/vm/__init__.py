"""ProtoHAIL: learned, human-guided VM oversubscription against static heuristics (docs/vm.md)."""
