"""The web UI (``contextedit ui``): a Gradio page and named API endpoints over the same library
functions as the CLI. :mod:`.jobs` holds the work (no Gradio), :mod:`.app` the page."""
