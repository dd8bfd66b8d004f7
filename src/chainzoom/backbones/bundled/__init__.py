"""The pretrained models shipped inside PyPI packages (ncnn files read into a torch RRDBNet)."""
