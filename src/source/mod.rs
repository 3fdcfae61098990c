//! Frame sources: cameras (v4l, nokhwa), image files, raw dumps, recorded wire streams.
