"""The libvips toolbox: loading, colour, orientation, encoding, fast JPEG and HEIF paths, and the kill switch at a
job's deadline. Library errors are translated here.
"""
