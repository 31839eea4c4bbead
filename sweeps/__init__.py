"""Optuna sweep drivers: search space -> trial overrides -> subprocess run -> record."""
