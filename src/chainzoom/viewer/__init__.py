"""A deep-zoom viewer for run folders, served on localhost.

``layers`` turns a run folder's manifest into OpenSeadragon tile sources placed
where each image sits in the input; ``tiles`` cuts Deep Zoom tiles out of a
pyramidal TIFF on request; ``server`` serves the page, the vendored OpenSeadragon
(``static/openseadragon``, BSD-3-Clause, see its LICENSE.txt) and the run's files.
"""
