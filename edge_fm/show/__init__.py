"""Showing results: predictions, explanations, figures, the HTML report and the web demo."""
