"""The sweep report: offline HTML with plots, and a W&B Report when online."""
