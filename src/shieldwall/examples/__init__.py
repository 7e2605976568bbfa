"""Example policy and demo tools shipped with the package."""
