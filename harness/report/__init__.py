"""Reports built from result JSON files: the self-contained HTML page (html.py) and JUnit XML (junit.py)."""
