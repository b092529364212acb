"""Tools around the codec, not needed to encode or decode: the cross-check against the
PyTorch mirror (`crosscheck`), the rate-distortion evaluation (`evaluate`) and the
benchmark (`bench`, run as `python -m minstf.tooling.bench`)."""
