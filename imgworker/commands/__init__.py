"""One module per imgworker command, named after it; cli lists them.
"""
