"""What each CLI command calls: ``run(...) -> Result``. Tests call these directly."""
