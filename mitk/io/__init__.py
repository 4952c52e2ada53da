"""Image input and output. Import the submodules you need; this package imports nothing heavy."""
