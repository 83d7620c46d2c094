"""The comparison report: intervals over seeds (statistics), every figure (plots), the paper's
claims tested (claims, with the paper's figures and claims as data in paper), the parts plugins
declare they play (roles), and report.md (markdown)."""
