"""A blind pairwise user study of zoom runs (the paper's human evaluation, on chainzoom's run folders).

One job per module: :mod:`.create` builds the trials from run folders, :mod:`.store`
keeps the votes in SQLite, :mod:`.serve` is the rater's page and its small HTTP API,
:mod:`.stats` the statistics (win rates, Bradley–Terry, sign tests) and :mod:`.report`
writes them as markdown with plots.
"""
