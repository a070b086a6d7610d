"""The libvips toolbox the backends and pipelines share: probe (the header check), load (shrink-on-load),
colour (the one sRGB conversion), encode (the one encoder), geometry, orientation, metadata, errors (libvips'
errors translated), kill (stopping work at a job's deadline), and the fast JPEG and HEIF paths.
"""
