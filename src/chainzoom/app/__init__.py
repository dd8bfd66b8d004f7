"""``chainzoom app``: a web app over the Python API (Gradio, the ``[app]`` extra).

:mod:`.choices` says what is installed, :mod:`.jobs` does the work (uploads, run folders,
the one model set in memory, downloads) with no web framework, :mod:`.server` is the page.
"""
