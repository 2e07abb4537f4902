"""The library every Lyceum service imports."""
