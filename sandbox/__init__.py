"""A local stand-in for Chimera's vendors, speaking their real HTTP APIs."""
