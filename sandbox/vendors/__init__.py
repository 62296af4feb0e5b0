"""One module per vendor API the sandbox speaks."""
