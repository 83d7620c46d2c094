"""The comparison report: its statistics, figures and markdown, and the paper's reported figures."""
