"""PML's ``utils`` path: ``utils.accuracy_calculator.AccuracyCalculator``."""
