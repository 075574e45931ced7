"""The web UI (``contextedit ui``): a Gradio page and named API endpoints over the same library
functions as the CLI. No Gradio outside :mod:`.app`: :mod:`.jobs` tunes (Cancel, Resume) and edits,
:mod:`.clip` previews and captions the frames a tune takes, :mod:`.outputs` writes the downloads and
scores the edits; :mod:`.app` is the page."""
