"""Any SR model file that spandrel recognises, imported without torchvision."""
