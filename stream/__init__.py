"""depthstream: live monocular depth (MiDaS v2.1 small) on an ordinary CPU."""
