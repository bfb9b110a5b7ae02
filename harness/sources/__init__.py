"""Where a YOLOv5 tree comes from: a ref of any repository checked out (cached, read-only), and the offline stand-in
mirror.
"""
