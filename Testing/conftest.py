"""Suite-wide settings: property-based tests are derandomised so a CI run is reproducible."""

from hypothesis import settings

settings.register_profile("spineseg", derandomize=True, deadline=None)
settings.load_profile("spineseg")
