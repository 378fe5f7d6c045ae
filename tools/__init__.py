"""Development tooling of the repository (not shipped)."""
