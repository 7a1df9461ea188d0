"""Heat-map overlays, figures and the HTML report of a run."""
